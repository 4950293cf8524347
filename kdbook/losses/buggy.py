"""The sources' buggy KD losses, kept as they wrote them for notebook 08 and
:func:`kdbook.doctor.check_kd_loss` to find (a teaching aid; ``kdbook.doctor`` re-exports them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.losses.logit import check_temperature_alpha, kd_loss


def kd_loss_source3(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 3's bug 1: ``log_softmax(teacher / T)`` as ``F.kl_div``'s target, no ``log_target``.

    ``F.kl_div(input, target)`` reads ``target`` as probabilities and computes
    ``target * (log(target) - input)``. Log-probabilities are negative, so ``log(target)``
    is NaN: in current PyTorch (2.x) the printed loss is NaN. The gradient is not: the NaN
    part does not depend on the student, and the rest, ``T^2 * sum(-log p_t * log p_s) / N``,
    has no minimum. It keeps pushing the student's probability of every class but the
    teacher's top one towards 0, so a student following it grows more confident than the
    teacher's softened targets and its KL to the teacher, after a first dip, climbs without
    bound; only the NaN in the logged loss gives it away. (Old PyTorch releases skipped
    non-positive targets: the same line returned a soft term of 0 and the student learned
    from the cross-entropy alone.)
    The fix is
    ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True)`` or a probability
    target ``softmax(t/T)``, as :func:`soft_kd_term` does.

    Everything else is kd_loss's: alpha weights the soft term, ``batchmean``, ``T^2``
    (source 3 itself weighs the cross-entropy by its ``a``; that is bug 6, see
    :func:`kd_loss_alpha_on_ce`).
    """
    check_temperature_alpha(temperature, alpha)
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),  # the bug: no log_target=True
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


def kd_loss_source4(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 4's bug 2: ``nn.KLDivLoss()`` with its default ``reduction='mean'`` and no ``T^2``.

    ``'mean'`` divides the summed KL by batch x classes instead of the batch size, so the
    soft term is ``1 / num_classes`` of the KL (PyTorch warns about it on each new call
    site), and without ``T^2`` it shrinks by another ``1 / T^2``: at T = 4 with 10 classes
    the soft term and its gradient are 1/160 of Hinton's, and the cross-entropy drowns
    them. (Source 4 ran T = 1, where only the ``1 / num_classes`` part bites; with its
    2 classes that is a factor 1/2.) Fix: ``reduction='batchmean'`` and ``* T**2``, as
    :func:`soft_kd_term` does.
    """
    check_temperature_alpha(temperature, alpha)
    kl = torch.nn.KLDivLoss()(  # the bug: default reduction='mean', and no T^2 below
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
    )
    return alpha * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


def kd_loss_alpha_on_ce(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """Source 3's convention (bug 6): ``alpha * CE + (1 - alpha) * T^2 * KL``.

    Not wrong in itself: it is :func:`kd_loss` with ``1 - alpha``. It becomes a bug when a
    recipe's alpha is fed to code of the other convention (source 4's code and prose
    disagree): alpha = 0.7 then puts 0.3 on the teacher instead of 0.7.
    """
    check_temperature_alpha(temperature, alpha)
    return kd_loss(student_logits, teacher_logits, targets, temperature, 1 - alpha)


BUGGY_KD_LOSSES = {
    "source 3: log-probability target without log_target=True (bug 1)": kd_loss_source3,
    "source 4: KLDivLoss() reduction='mean', no T^2 (bug 2)": kd_loss_source4,
    "source 3's convention: alpha on the cross-entropy (bug 6)": kd_loss_alpha_on_ce,
}
