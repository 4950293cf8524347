"""kdbook.doctor.check_kd_step: the right step passes, each usual mistake is named.

Each step below is written out here the long way (sums over classes, explicit means), not
with kdbook.losses, so the check is tested against a second implementation.
"""

from __future__ import annotations

import pytest
import torch

from kdbook.doctor import check_kd_step
from kdbook.runtime import UNLABELED


def log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits / temperature
    return z - z.exp().sum(1, keepdim=True).log()


def make_step(
    *,
    eval_teacher: bool = True,
    no_grad: bool = True,
    detach: bool = True,
    squared: bool = True,
    mask: str = "hard",  # "hard": CE on labelled rows; "none": CE on every row; "both"
    zero_grad: bool = True,
    step: bool = True,
    alpha_on_soft: bool = True,
):
    """A distillation step with the given mistakes (the defaults: none)."""

    def kd_step(student, teacher, x, y, optimizer, temperature, alpha):
        if eval_teacher:
            teacher.eval()
        with torch.no_grad() if no_grad else torch.enable_grad():
            teacher_logits = teacher(x)
        if detach:
            teacher_logits = teacher_logits.detach()
        logits = student(x)
        labelled = y != UNLABELED if mask != "none" else torch.ones_like(y, dtype=torch.bool)
        soft_rows = labelled if mask == "both" else torch.ones_like(labelled)
        log_s = log_probs(logits[soft_rows], temperature)
        log_t = log_probs(teacher_logits[soft_rows], temperature)
        kl = (log_t.exp() * (log_t - log_s)).sum() / int(soft_rows.sum())
        soft = temperature**2 * kl if squared else kl
        rows = labelled.nonzero().flatten()
        hard = (
            -log_probs(logits[rows], 1.0).gather(1, y[rows, None]).mean()
            if len(rows)
            else torch.zeros(())
        )
        a = alpha if alpha_on_soft else 1 - alpha
        loss = a * soft + (1 - a) * hard
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        if step:
            optimizer.step()
        return loss.item()

    return kd_step


def test_the_right_step_passes() -> None:
    diagnosis = check_kd_step(make_step())
    assert diagnosis.ok, str(diagnosis)
    assert "same weights as fit's" in str(diagnosis)


def test_cross_entropy_with_ignore_index_is_right_too() -> None:
    """``ignore_index=UNLABELED`` averages over the labelled rows, like the mask, but a
    batch without any label then gives a NaN loss (the weights stay right): the check
    says so when the step returns its loss."""

    def kd_step(student, teacher, x, y, optimizer, temperature, alpha):
        teacher.eval()
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        log_s, log_t = log_probs(logits, temperature), log_probs(teacher_logits, temperature)
        soft = temperature**2 * (log_t.exp() * (log_t - log_s)).sum() / len(x)
        hard = torch.nn.functional.cross_entropy(logits, y, ignore_index=UNLABELED)
        loss = alpha * soft + (1 - alpha) * hard
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    diagnosis = check_kd_step(kd_step)
    assert not diagnosis.ok and len(diagnosis.problems) == 1
    assert "every label hidden the step gave NaN" in diagnosis.problems[0]


@pytest.mark.parametrize(
    ("mistakes", "named"),
    [
        ({"eval_teacher": False}, "the teacher ran in train mode"),
        ({"no_grad": False}, "ran with autograd on"),
        ({"no_grad": False, "detach": False}, "gradients flowed into the teacher"),
        ({"squared": False}, "lacks the T^2 factor"),
        ({"mask": "none"}, "the hidden labels (UNLABELED = -1) reached the cross-entropy"),
        ({"mask": "both"}, "the soft term skips the unlabelled images"),
        ({"zero_grad": False}, "call optimizer.zero_grad() before backward()"),
        ({"step": False}, "the student's weights did not change"),
        ({"alpha_on_soft": False}, "alpha weights the cross-entropy"),
    ],
)
def test_each_mistake_is_named(mistakes: dict, named: str) -> None:
    diagnosis = check_kd_step(make_step(**mistakes))
    assert not diagnosis.ok
    assert len(diagnosis.problems) == 1, diagnosis.problems
    assert named in diagnosis.problems[0], diagnosis.problems


def test_an_unwritten_step_and_a_crash_are_reported() -> None:
    def todo(*args):
        raise NotImplementedError

    assert str(check_kd_step(todo)).startswith("✗ not answered yet")

    def broken(student, teacher, x, y, optimizer, temperature, alpha):
        raise KeyError("oops")

    assert "calling the step raised KeyError" in str(check_kd_step(broken))
