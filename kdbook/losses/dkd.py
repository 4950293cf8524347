"""Decoupled KD (Zhao et al., CVPR 2022): TCKD and NCKD, the objective with its warm-up, and
its :class:`DKD` term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdbook.config import check_params
from kdbook.data import UNLABELED, Dataset
from kdbook.losses.base import Outputs, Term, register_term
from kdbook.losses.logit import check_logit_shapes, check_temperature_alpha, kl_log

DKD_BETA = 8.0  # Zhao et al.'s weight of NCKD (TCKD's is 1) on CIFAR-100
DKD_WARMUP = 20 / 240  # their linear warm-up: the first 20 of 240 epochs, as progress


def _check_targets(targets: torch.Tensor, num_classes: int, name: str) -> None:
    bad = (targets < 0) | (targets >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"targets must be class indices in [0, {num_classes}) for {name} (it splits the "
            f"classes on each sample's label; unlabelled samples have none), got "
            f"{targets[bad][0].item()}"
        )


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample ``(TCKD, NCKD)`` of decoupled KD (Zhao et al., CVPR 2022), each times ``T^2``.

    Introduced in notebook 13_dark_knowledge_and_dkd.

    With ``p = softmax(z/T)`` and ``y`` the label:

    - TCKD ``= T^2 * KL([p_y^t, 1 - p_y^t] || [p_y^s, 1 - p_y^s])``, the binary "target or
      not" distributions;
    - NCKD ``= T^2 * KL(q^t || q^s)`` with ``q = softmax`` over the C - 1 non-target logits
      only (the target class is removed before the softmax, not after).

    Classic KD is ``TCKD + (1 - p_y^t) * NCKD`` sample by sample: a confident teacher (p_y^t
    near 1) all but switches the non-target part off, which is what DKD undoes.

    Returns:
        Two ``(N,)`` tensors.
    """
    check_temperature_alpha(temperature)
    check_logit_shapes(student_logits, teacher_logits, targets)
    _check_targets(targets, student_logits.shape[-1], "dkd_loss")
    t = temperature
    target = F.one_hot(targets, student_logits.shape[-1]).bool()

    def split(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log [p_y, 1 - p_y] (N, 2) and log q over the non-target classes (N, C - 1)."""
        log_p = F.log_softmax(logits / t, dim=-1)
        log_py = log_p[target]
        log_rest = torch.logsumexp(log_p.masked_fill(target, -math.inf), dim=-1)
        others = (logits / t)[~target].view(len(logits), -1)
        return torch.stack([log_py, log_rest], dim=-1), F.log_softmax(others, dim=-1)

    bin_s, q_s = split(student_logits)
    bin_t, q_t = split(teacher_logits)

    def kl(log_t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)

    return t**2 * kl(bin_t, bin_s), t**2 * kl(q_t, q_s)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    beta: float = DKD_BETA,
) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation",
    CVPR 2022, arXiv:2203.08679): ``TCKD + beta * NCKD``, batchmean, both with ``T^2``.

    Introduced in notebook 13_dark_knowledge_and_dkd.

    ``loss = mean_n [ T^2 KL(b^t || b^s) + beta * T^2 KL(q^t || q^s) ]``

    where ``b = [p_y, 1 - p_y]`` is the binary target/non-target split of ``softmax(z/T)``
    and ``q`` the softmax over the non-target classes alone (:func:`dkd_terms`). The
    paper's defaults are a TCKD weight of 1, beta 8 and T 4. The cross-entropy on the
    labels and the linear warm-up of this loss over the first part of training are not in
    it: :class:`kdbook.distill.DKD` adds them (:func:`dkd_objective`), as the paper does.

    Args:
        student_logits, teacher_logits: ``(N, C)``, C >= 2.
        targets: ``(N,)`` class indices (every sample needs its label).
        temperature: T > 0.
        beta: weight of NCKD, >= 0 (beta = 1 - p_y^t per sample would give back classic KD).

    >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
    >>> dkd_loss(s, t, y).item()
    0.0
    """
    check_beta(beta)
    tckd, nckd = dkd_terms(student_logits, teacher_logits, targets, temperature)
    return tckd.mean() + beta * nckd.mean()


def check_beta(beta: float) -> None:
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")


def dkd_warmup_weight(progress: float, warmup: float = DKD_WARMUP) -> float:
    """DKD's linear warm-up: ``min(progress / warmup, 1)`` (1 throughout when warmup is 0)."""
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction of training in [0, 1), got {warmup!r}")
    return 1.0 if warmup == 0 else min(max(progress, 0.0) / warmup, 1.0)


def dkd_objective(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    beta: float = DKD_BETA,
    progress: float = 1.0,
    *,
    warmup: float = DKD_WARMUP,
) -> torch.Tensor:
    """The loss DKD trains with: ``CE(s, y) + min(progress / warmup, 1) * dkd_loss(...)``.

    ``progress`` is the fraction of training done (0 to 1); the warm-up scales the DKD
    term only, never the cross-entropy. This is the convention
    ``kdbook.doctor.check_kd_loss(fn, convention="dkd")`` checks a user's DKD against.
    """
    weight = dkd_warmup_weight(progress, warmup)
    dkd = dkd_loss(student_logits, teacher_logits, targets, temperature, beta)
    return F.cross_entropy(student_logits, targets) + weight * dkd


@register_term("dkd")
class DKD(Term):
    """Decoupled KD (Zhao et al., CVPR 2022) as the paper trains it, cross-entropy included:

    ``loss = CE(s, y) + min(progress / warmup, 1) * (TCKD + beta * NCKD)`` at T

    (:func:`kdbook.losses.dkd_objective`). It replaces the Distiller's LogitKD:
    ``fit(student, data, teacher=t, terms=[DKD()])``. The paper's defaults: T 4, beta 8,
    warm-up over the first 20 of 240 epochs. Every training sample needs its label.
    """

    replaces_logit_kd = True

    def __init__(
        self, temperature: float = 4.0, beta: float = DKD_BETA, warmup: float = DKD_WARMUP
    ) -> None:
        super().__init__()
        check_params({"temperature": temperature})
        check_beta(beta)
        dkd_warmup_weight(0.0, warmup)  # checks warmup
        self.temperature, self.beta, self.warmup = temperature, beta, warmup

    def check(self, model: nn.Module, teachers: list[nn.Module], data: Dataset, device) -> None:
        hidden = int((data.train.labels == UNLABELED).sum())
        if hidden:
            raise ValueError(
                f"loss term 'dkd' needs every training label (TCKD and NCKD split the classes "
                f"on the label), got {hidden} unlabelled training images"
            )

    def forward(self, out: Outputs, progress: float):
        t = self.temperature
        dkd = dkd_loss(out.logits, out.teacher_logits, out.targets, t, self.beta)
        weight = dkd_warmup_weight(progress, self.warmup)
        loss = F.cross_entropy(out.logits, out.targets) + weight * dkd
        return loss, {"kl": kl_log(out, t), "dkd": dkd.item()}
