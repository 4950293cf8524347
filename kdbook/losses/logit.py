"""Hinton's loss: soft targets at a temperature, the KL term, and its :class:`LogitKD` term.

>>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
>>> round(kd_loss(s, t, y, temperature=4.0, alpha=1.0).item(), 6)  # student == teacher
0.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kdbook.config import check_params
from kdbook.data import UNLABELED
from kdbook.losses.base import Outputs, Schedulable, Term, check_schedule, register_term, setting
from kdbook.schedules import value_at


def check_temperature_alpha(temperature: float, alpha: float | None = None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def check_logit_shapes(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> None:
    """Raise ValueError naming the shapes unless the logits match and targets fit them."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape (N, C), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if targets is not None and targets.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {tuple(student_logits.shape[:-1])} (one class index per "
            f"row of student_logits {tuple(student_logits.shape)}), got {tuple(targets.shape)}"
        )


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)``: T = 1 is the plain softmax, larger T spreads the mass.

    Introduced in notebook 04_loss.
    """
    check_temperature_alpha(temperature)
    return F.softmax(logits / temperature, dim=-1)


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each row's z-score: ``(z - mean(z)) / (std(z) + eps)`` over the classes (Sun et al. 2024).

    Introduced in notebook 13_dark_knowledge_and_dkd.

    Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024, arXiv:2403.01427) applies this to the student's and the teacher's logits
    before the temperature, so that the student matches the teacher's ranking of the
    classes and not the scale of its logits. The standard deviation is the population one
    (ddof 0, as the paper's formula writes it); the authors' code divides by C - 1, which
    is the same as a temperature larger by ``sqrt(C / (C - 1))``.

    >>> standardize_logits(torch.tensor([[1.0, 2.0, 3.0]])).mul(1000).round().tolist()
    [[-1225.0, 0.0, 1225.0]]
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must have at least 2 classes in the last dimension, got shape "
            f"{tuple(logits.shape)}"
        )
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, unbiased=False)
    return (logits - mean) / (std + eps)


def soft_kd_term(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (``batchmean``).

    Introduced in notebook 04_loss.

    The ``T^2`` keeps the soft term's gradient on the same scale as the cross-entropy's
    as T changes: the gradient of the KL with respect to the logits shrinks like ``1/T^2``.
    ``standardize``: z-score both sides' logits first (:func:`standardize_logits`).
    """
    check_temperature_alpha(temperature)
    check_logit_shapes(student_logits, teacher_logits)
    if standardize:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
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
    *,
    standardize: bool = False,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss (arXiv:1503.02531), alpha weighting the soft term.

    Introduced in notebook 04_loss.

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
        standardize: logit standardisation (Sun et al., CVPR 2024): the soft term on each
            sample's z-scored logits, ``softmax(Z(t)/T)`` against ``softmax(Z(s)/T)``
            (:func:`standardize_logits`); the cross-entropy stays on the raw logits.

    Returns:
        A scalar tensor.
    """
    check_temperature_alpha(temperature, alpha)
    check_logit_shapes(student_logits, teacher_logits, targets)
    soft = soft_kd_term(student_logits, teacher_logits, temperature, standardize=standardize)
    labelled = targets != UNLABELED
    if labelled.any():
        hard = F.cross_entropy(student_logits[labelled], targets[labelled])
    else:
        hard = student_logits.new_zeros(())
    return alpha * soft + (1 - alpha) * hard


"""The buggy variants by what is wrong with them (see each docstring)."""


def ensemble_logits(
    teacher_logits: list[torch.Tensor],
    temperature: float,
    weights: list[float] | None = None,
) -> torch.Tensor:
    """Several teachers as one: logits whose softmax at T is the weighted mean of theirs.

    ``p = sum_i w_i softmax(t_i / T)`` (weights normalised to sum 1, equal by default), and
    the result is ``T * log p``, so that ``softmax(result / T) = p`` and :func:`kd_loss`
    distils towards the averaged probabilities at T (not towards averaged logits, which
    would let one over-confident teacher dominate). Source 3's multi-teacher variant.
    """
    check_temperature_alpha(temperature)
    if not teacher_logits:
        raise ValueError("teacher_logits must hold at least one tensor, got []")
    weights = [1.0] * len(teacher_logits) if weights is None else list(weights)
    if len(weights) != len(teacher_logits) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"weights must be {len(teacher_logits)} numbers >= 0 with a positive sum, "
            f"got {weights!r}"
        )
    # log p = logsumexp_i(log w_i + log_softmax(t_i / T)): no log(0) where a softmax underflows
    log_w = torch.log(torch.tensor(weights, dtype=teacher_logits[0].dtype) / sum(weights))
    log_p = torch.stack(
        [F.log_softmax(t / temperature, dim=-1) for t in teacher_logits]
    ) + log_w.to(teacher_logits[0].device).view(-1, *[1] * teacher_logits[0].dim())
    return temperature * torch.logsumexp(log_p, dim=0)


@register_term("cross_entropy")
class CrossEntropy(Term):
    """Cross-entropy on the labels: the student trained alone."""

    needs_teacher = False

    def settings(self) -> dict[str, Any]:
        return {}

    def forward(self, out: Outputs, progress: float):
        return F.cross_entropy(out.logits, out.targets), {}


def kl_log(out: Outputs, t: float) -> float:
    """The KL at T without the T^2 factor: how far the student is from its teacher."""
    return soft_kd_term(out.logits.detach(), out.teacher_logits, t).item() / t**2


@register_term("logit_kd")
class LogitKD(Term):
    """Hinton's loss :func:`kdbook.losses.kd_loss` at T and alpha (numbers or schedules).

    The Distiller builds one from its ``temperature`` and ``alpha``. Given in ``terms``, a
    LogitKD replaces that one: ``terms=[LogitKD(4.0, 0.7, standardize=True)]`` is logit
    standardisation (Sun et al. 2024, :func:`kdbook.losses.standardize_logits`).
    """

    replaces_logit_kd = True

    def __init__(
        self, temperature: Schedulable, alpha: Schedulable, *, standardize: bool = False
    ) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("alpha", alpha)):
            check_schedule(name, value, lambda v, n=name: check_params({n: v}))
        if not isinstance(standardize, bool):
            raise ValueError(f"standardize must be True or False, got {standardize!r}")
        self.temperature, self.alpha, self.standardize = temperature, alpha, standardize

    def settings(self) -> dict[str, Any]:
        recorded = {"temperature": setting(self.temperature), "alpha": setting(self.alpha)}
        return recorded | ({"standardize": True} if self.standardize else {})

    def scheduled(self) -> dict[str, Schedulable]:
        values = {"temperature": self.temperature, "alpha": self.alpha}
        return {k: v for k, v in values.items() if callable(v)}

    def forward(self, out: Outputs, progress: float):
        t, a = value_at(self.temperature, progress), value_at(self.alpha, progress)
        loss = kd_loss(
            out.logits, out.teacher_logits, out.targets, t, a, standardize=self.standardize
        )
        return loss, {"kl": kl_log(out, t)}
