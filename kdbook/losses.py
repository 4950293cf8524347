"""Distillation losses, each with its formula and its paper.

>>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
>>> round(kd_loss(s, t, y, temperature=4.0, alpha=1.0).item(), 6)  # student == teacher
0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.data import UNLABELED


def _check(temperature: float, alpha: float | None = None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)``: T = 1 is the plain softmax, larger T spreads the mass."""
    _check(temperature)
    return F.softmax(logits / temperature, dim=-1)


def soft_kd_term(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (``batchmean``).

    The ``T^2`` keeps the soft term's gradient on the same scale as the cross-entropy's
    as T changes: the gradient of the KL with respect to the logits shrinks like ``1/T^2``.
    """
    _check(temperature)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss (arXiv:1503.02531), alpha weighting the soft term.

    ``loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``

    with the KL averaged over the batch (``batchmean``). This is the convention of
    sources 1 and 2. Source 3 writes ``a * CE + (1 - a) * KD``: the same loss with
    ``alpha = 1 - a``. Targets equal to ``kdbook.data.UNLABELED`` (-1) have no label:
    they add only the soft term, and the cross-entropy averages over the labelled rest.

    Args:
        student_logits: ``(N, C)`` raw scores of the student.
        teacher_logits: ``(N, C)`` raw scores of the teacher (no gradient needed).
        targets: ``(N,)`` class indices, or UNLABELED.
        temperature: T > 0; 1 leaves the teacher's softmax as it is.
        alpha: weight of the soft term, in [0, 1].

    Returns:
        A scalar tensor.
    """
    _check(temperature, alpha)
    soft = soft_kd_term(student_logits, teacher_logits, temperature)
    labelled = targets != UNLABELED
    if labelled.any():
        hard = F.cross_entropy(student_logits[labelled], targets[labelled])
    else:
        hard = student_logits.new_zeros(())
    return alpha * soft + (1 - alpha) * hard
