"""The token-loss detectors name each buggy variant, pass the package's losses, and say why."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbook.doctor import (
    BUGGY_TOKEN_LOSSES,
    check_kl_direction,
    check_log_prob_targets,
    check_padding_mask,
    check_temperature_sides,
    check_token_loss,
    jsd_beta_flipped,
    token_kd_log_prob_target,
    token_kd_mask_ignored,
    token_kd_mask_mean_over_all,
    token_kd_reversed,
    token_kd_temperature_student_only,
)
from kdbook.losses import generalized_jsd_loss, reverse_kl_loss, token_kd_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def jsd_at(beta):
    return lambda s, t, m, temperature: generalized_jsd_loss(s, t, m, beta, temperature)


@pytest.mark.parametrize(
    "fn, divergence, beta",
    [
        (token_kd_loss, "forward", 0.5),
        (reverse_kl_loss, "reverse", 0.5),
        (jsd_at(0.0), "jsd", 0.0),
        (jsd_at(0.3), "jsd", 0.3),
        (jsd_at(1.0), "jsd", 1.0),
    ],
)
def test_the_package_losses_pass(fn, divergence, beta):
    diagnosis = check_token_loss(fn, divergence, beta=beta)
    assert diagnosis.ok, diagnosis
    assert str(diagnosis).startswith("✓")


def test_a_hand_written_right_loss_passes():
    def mine(s, t, mask, temperature):
        p_t = F.softmax(t[mask] / temperature, -1)
        log_s = F.log_softmax(s[mask] / temperature, -1)
        kl = F.kl_div(log_s, p_t, reduction="batchmean")  # probabilities as the target
        return temperature**2 * kl

    assert check_token_loss(mine).ok


@pytest.mark.parametrize(
    "fn, detector, words",
    [
        (token_kd_reversed, check_kl_direction, "the other way"),
        (token_kd_mask_ignored, check_padding_mask, "mask is ignored"),
        (token_kd_mask_mean_over_all, check_padding_mask, "divide by mask.sum()"),
        (token_kd_temperature_student_only, check_temperature_sides, "only the student's"),
        (token_kd_log_prob_target, check_log_prob_targets, "log_target=True"),
    ],
)
def test_each_buggy_variant_is_named_by_its_detector_alone(fn, detector, words):
    assert fn in BUGGY_TOKEN_LOSSES.values()
    whole = check_token_loss(fn)
    assert not whole.ok and len(whole.problems) == 1 and words in whole.problems[0], whole
    alone = detector(fn)
    assert not alone.ok and words in str(alone)
    others = {check_kl_direction, check_padding_mask, check_temperature_sides}
    others |= {check_log_prob_targets}
    for other in others - {detector}:
        assert other(fn).ok, (other.__name__, str(other(fn)))


def test_reverse_kl_where_forward_is_meant_and_back():
    assert "the other way" in str(check_token_loss(reverse_kl_loss, "forward"))
    assert "the other way" in str(check_token_loss(token_kd_loss, "reverse"))


def test_jsd_with_beta_on_the_student_side_is_named():
    diagnosis = check_token_loss(jsd_beta_flipped, "jsd", beta=0.1)
    assert not diagnosis.ok and "beta weighs the other side" in str(diagnosis)


def test_two_mistakes_at_once_are_both_named():
    def both(s, t, mask, temperature):  # mask ignored and the teacher at T = 1
        v = s.shape[-1]
        log_s = F.log_softmax(s.reshape(-1, v) / temperature, -1)
        log_t = F.log_softmax(t.reshape(-1, v), -1)
        return temperature**2 * F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)

    problems = check_token_loss(both).problems
    assert len(problems) == 2
    assert "mask is ignored" in problems[0] and "only the student's" in problems[1]


def test_missing_t2_and_the_teacher_side_and_unknown_mistakes():
    assert "T^2" in str(check_token_loss(lambda s, t, m, T: token_kd_loss(s, t, m, T) / T**2))
    assert "T^2" in str(
        check_token_loss(lambda s, t, m, T: generalized_jsd_loss(s, t, m, 0.5, T) * T**2, "jsd")
    )

    def teacher_side(s, t, mask, temperature):
        return token_kd_loss(s * temperature, t, mask, temperature)

    assert "only the teacher's" in str(check_token_loss(teacher_side))
    odd = check_token_loss(lambda s, t, m, T: 1.5 * token_kd_loss(s, t, m, T))
    assert not odd.ok and "does not recognise" in str(odd)


def test_a_loss_that_cannot_run_or_learn_is_reported():
    def raises(s, t, mask, temperature):
        raise RuntimeError("boom")

    assert "raised RuntimeError: boom" in str(check_token_loss(raises))
    detached = check_token_loss(lambda s, t, m, T: token_kd_loss(s.detach(), t, m, T))
    assert "no gradient" in str(detached)
    assert "scalar" in str(check_token_loss(lambda s, t, m, T: torch.zeros(2)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"divergence": "forwards"}, "divergence must be one of"),
        ({"beta": 1.2}, "beta must be"),
        ({"temperature": 1.0}, "temperature must be > 0 and != 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_token_loss(token_kd_loss, **kwargs)
