"""kd_loss against a second implementation written the long way, plus its properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbook.data import UNLABELED
from kdbook.losses import kd_loss, soft_kd_term, soft_targets

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_kd(student, teacher, targets, temperature, alpha):
    """Hinton's loss spelled out: explicit sums over classes, float64, no F.kl_div."""
    student, teacher = student.double(), teacher.double()
    t = temperature
    n = student.shape[0]
    log_ps = student / t - torch.logsumexp(student / t, dim=1, keepdim=True)
    log_pt = teacher / t - torch.logsumexp(teacher / t, dim=1, keepdim=True)
    pt = log_pt.exp()
    kl_rows = [
        sum(pt[i, c] * (log_pt[i, c] - log_ps[i, c]) for c in range(student.shape[1]))
        for i in range(n)
    ]
    soft = t * t * sum(kl_rows) / n
    log_p = student - torch.logsumexp(student, dim=1, keepdim=True)  # CE at T = 1
    labelled = [i for i in range(n) if int(targets[i]) != UNLABELED]
    if labelled:
        hard = -sum(log_p[i, int(targets[i])] for i in labelled) / len(labelled)
    else:
        hard = torch.tensor(0.0, dtype=torch.float64)
    return float(alpha * soft + (1 - alpha) * hard)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.7, 1.0])
def test_kd_loss_matches_reference(temperature, alpha):
    student, teacher, targets = random_batch(seed=int(temperature * 10))
    got = kd_loss(student, teacher, targets, temperature, alpha).item()
    assert got == pytest.approx(
        reference_kd(student, teacher, targets, temperature, alpha), rel=1e-5, abs=1e-6
    )


def test_soft_term_is_zero_when_student_equals_teacher():
    logits = random_batch()[0]
    assert soft_kd_term(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    targets = torch.zeros(len(logits), dtype=torch.long)
    assert kd_loss(logits, logits, targets, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_cross_entropy():
    student, teacher, targets = random_batch()
    expected = F.cross_entropy(student, targets)
    torch.testing.assert_close(kd_loss(student, teacher, targets, 4.0, 0.0), expected)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_alpha_one_is_t_squared_kl(temperature):
    student, teacher, targets = random_batch()
    kl = F.kl_div(
        F.log_softmax(student / temperature, 1),
        F.softmax(teacher / temperature, 1),
        reduction="batchmean",
    )
    torch.testing.assert_close(
        kd_loss(student, teacher, targets, temperature, 1.0), temperature**2 * kl
    )


def test_unlabelled_samples_add_only_the_soft_term():
    student, teacher, targets = random_batch(n=8)
    targets[::2] = UNLABELED
    alpha, t = 0.4, 3.0
    got = kd_loss(student, teacher, targets, t, alpha)
    labelled = targets != UNLABELED
    expected = alpha * soft_kd_term(student, teacher, t) + (1 - alpha) * F.cross_entropy(
        student[labelled], targets[labelled]
    )
    torch.testing.assert_close(got, expected)
    assert got.item() == pytest.approx(reference_kd(student, teacher, targets, t, alpha), rel=1e-5)
    # Changing an unlabelled sample's "label" is impossible; changing its logits moves only
    # the soft term, so with alpha = 0 the loss ignores it.
    moved = student.clone()
    moved[0] += torch.randn(student.shape[1])
    torch.testing.assert_close(
        kd_loss(moved, teacher, targets, t, 0.0), kd_loss(student, teacher, targets, t, 0.0)
    )


def test_all_unlabelled_batch_is_finite_and_soft_only():
    student, teacher, _ = random_batch()
    student.requires_grad_(True)
    targets = torch.full((len(student),), UNLABELED)
    loss = kd_loss(student, teacher, targets, 2.0, 0.6)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, 0.6 * soft_kd_term(student, teacher, 2.0))
    loss.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan])
def test_bad_temperature_is_refused(temperature):
    student, teacher, targets = random_batch()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(student, teacher, targets, temperature, 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_targets(student, temperature)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, math.nan])
def test_bad_alpha_is_refused(alpha):
    student, teacher, targets = random_batch()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        kd_loss(student, teacher, targets, 4.0, alpha)


def test_soft_targets_spread_with_temperature():
    logits = torch.tensor([[4.0, 1.0, 0.0]])
    torch.testing.assert_close(soft_targets(logits, 1.0), logits.softmax(1))
    p1, p4 = soft_targets(logits, 1.0), soft_targets(logits, 4.0)
    assert p4.max() < p1.max() and p4.min() > p1.min()
    torch.testing.assert_close(p4.sum(1), torch.ones(1))


def test_gradient_scale_kept_by_t_squared():
    # The soft term's gradient on the logits is (p_s - p_t) * T / N; without T^2 it would
    # be T^2 times smaller (source 4's bug 2). Check the formula at T = 5.
    student, teacher, _ = random_batch(n=4)
    student.requires_grad_(True)
    soft_kd_term(student, teacher, 5.0).backward()
    expected = (soft_targets(student.detach(), 5.0) - soft_targets(teacher, 5.0)) * 5.0 / 4
    torch.testing.assert_close(student.grad, expected)


# -- properties -----------------------------------------------------------------------------

NUM_CLASSES = 4


def logits_strategy(bound: float, n: int = 3):
    value = st.floats(-bound, bound, allow_nan=False, width=32)
    return st.lists(
        st.lists(value, min_size=NUM_CLASSES, max_size=NUM_CLASSES), min_size=n, max_size=n
    ).map(lambda rows: torch.tensor(rows, dtype=torch.float64))


targets_strategy = st.lists(st.integers(UNLABELED, NUM_CLASSES - 1), min_size=3, max_size=3).map(
    torch.tensor
)
temperatures = st.floats(0.05, 100.0)
alphas = st.floats(0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(logits_strategy(50.0), logits_strategy(50.0), targets_strategy, temperatures, alphas)
def test_loss_is_non_negative(student, teacher, targets, temperature, alpha):
    assert kd_loss(student, teacher, targets, temperature, alpha).item() >= -1e-9


@settings(max_examples=40, deadline=None)
@given(
    logits_strategy(50.0),
    logits_strategy(50.0),
    targets_strategy,
    temperatures,
    alphas,
    st.floats(-1e3, 1e3),
    st.floats(-1e3, 1e3),
)
def test_loss_is_invariant_to_a_constant_shift(
    student, teacher, targets, temperature, alpha, shift_s, shift_t
):
    base = kd_loss(student, teacher, targets, temperature, alpha).item()
    shifted = kd_loss(student + shift_s, teacher + shift_t, targets, temperature, alpha).item()
    assert shifted == pytest.approx(base, rel=1e-7, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(logits_strategy(1e4), logits_strategy(1e4), targets_strategy, temperatures, alphas)
def test_loss_is_finite_at_extreme_logits_float32(student, teacher, targets, temperature, alpha):
    student = student.float().requires_grad_(True)
    loss = kd_loss(student, teacher.float(), targets, temperature, alpha)
    assert torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [0.05, 100.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_loss_is_finite_at_the_corners(temperature, sign):
    student = sign * torch.tensor([[1e4, -1e4, 0.0, 1e4]])
    teacher = -student
    for targets in (torch.tensor([1]), torch.tensor([UNLABELED])):
        loss = kd_loss(student, teacher, targets, temperature, 0.5)
        assert torch.isfinite(loss)
