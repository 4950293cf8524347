"""Token-level distillation losses written the usual wrong ways, for notebook 16 and
:func:`kdbook.doctor.check_token_loss` to find (a teaching aid; the right ones are in
:mod:`kdbook.losses.tokens`).

Each takes ``(student_logits, teacher_logits, mask, temperature)`` like
:func:`kdbook.losses.token_kd_loss` and differs from it by the one mistake its docstring names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.losses.tokens import generalized_jsd_loss


def token_kd_reversed(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Meant as forward KL, computes ``KL(p_s || p_t)``: ``F.kl_div`` got its arguments swapped.

    ``F.kl_div(input, target)`` is ``KL(target || input)``: the student's log-probabilities go
    first. Swapped, the student is trained mode-seeking (reverse KL) when it was meant to cover
    the teacher's modes.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)  # the bug
    return temperature**2 * kl[mask.bool()].mean()


def token_kd_mask_ignored(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The padding is distilled too: the mask is never read (image KD's ``batchmean`` per row).

    The student learns to copy the teacher after the end of each sequence, where the teacher's
    predictions mean nothing, and the short sequences' real tokens weigh less.
    """
    v = student_logits.shape[-1]
    log_s = F.log_softmax(student_logits.reshape(-1, v) / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.reshape(-1, v) / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)  # the bug: all rows
    return temperature**2 * kl


def token_kd_mask_mean_over_all(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Zeroes the padding but divides by every position, padding included.

    ``(kl * mask).sum() / mask.numel()``: the loss (and its gradient) shrinks with the share of
    padding in the batch, so a batch of short sequences teaches less. Divide by ``mask.sum()``.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    return temperature**2 * (kl * mask).sum() / mask.numel()  # the bug: numel, not mask.sum()


def token_kd_temperature_student_only(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Divides the student's logits by T and leaves the teacher's at T = 1.

    The student then matches the teacher's *sharp* distribution with softened logits: at T = 4
    it must grow its logits four times as large, and no temperature softens the target.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits, dim=-1)  # the bug: no / temperature
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    return temperature**2 * kl[mask.bool()].mean()


def token_kd_log_prob_target(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The teacher's log-probabilities as ``F.kl_div``'s target without ``log_target=True``.

    The image chapters' source-3 bug at every position: the value is NaN (the log of a negative
    "probability"), the gradient is ``-log p_t`` and has no minimum.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none").sum(-1)  # the bug: no log_target=True
    return temperature**2 * kl[mask.bool()].mean()


def jsd_beta_flipped(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    beta: float = 0.1,
) -> torch.Tensor:
    """GKD's JSD with beta on the student's side: TRL's loss at ``1 - beta``.

    The mixture ``m = beta p_s + (1 - beta) p_t`` instead of ``beta p_t + (1 - beta) p_s``:
    beta near 0 then behaves like reverse KL, not forward (the convention differs between
    papers and code; TRL's beta weighs the teacher).
    """
    return generalized_jsd_loss(teacher_logits, student_logits, mask, beta, temperature)


BUGGY_TOKEN_LOSSES = {
    "KL direction swapped (reverse KL where forward was meant)": token_kd_reversed,
    "padding mask ignored": token_kd_mask_ignored,
    "padding zeroed but the mean over every position": token_kd_mask_mean_over_all,
    "temperature on the student's side only": token_kd_temperature_student_only,
    "log-probabilities as kl_div's target without log_target=True": token_kd_log_prob_target,
}
