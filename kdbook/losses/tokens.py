"""Per-token distillation of language models: forward KL, reverse KL and the generalised
Jensen-Shannon divergence over ``[B, L, V]`` logits with a padding mask, each beside its
:class:`Term`.

Every function compares, position by position, the student's and the teacher's next-token
distributions at a temperature and averages over the positions the mask keeps (True: a real
token; False: padding). Masked positions are removed before any arithmetic, so whatever they
hold (NaN included) changes neither the loss nor its gradient.

>>> s = t = torch.zeros(2, 3, 5)
>>> token_kd_loss(s, t).item(), reverse_kl_loss(s, t).item(), generalized_jsd_loss(s, t).item()
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbook.data import UNLABELED
from kdbook.losses.base import Outputs, Term, register_term
from kdbook.losses.logit import check_temperature_alpha

JSD_BETA = 0.5  # TRL GKDConfig's default beta


def check_jsd_beta(beta: float) -> None:
    """Raise ValueError unless ``beta`` is a number in [0, 1] (the weight of the teacher)."""
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and 0 <= beta <= 1):
        raise ValueError(
            f"beta must be a number in [0, 1] (0: forward KL, 1: reverse KL), got {beta!r}"
        )


def check_token_inputs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None
) -> None:
    """Raise ValueError naming the shapes unless the logits are ``[..., V]`` alike and the mask
    is ``[...]`` of booleans (or 0/1)."""
    s, t = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if student_logits.dim() < 2:
        raise ValueError(f"student_logits must be [B, L, V] (or [N, V]), got shape {s}")
    if s[-1] != t[-1]:
        raise ValueError(
            f"student and teacher vocabularies differ: student_logits {s} has {s[-1]} tokens, "
            f"teacher_logits {t} has {t[-1]} (both must score the same vocabulary)"
        )
    if s != t:
        raise ValueError(f"student_logits and teacher_logits must have one shape, got {s} and {t}")
    if mask is None:
        return
    if tuple(mask.shape) != s[:-1]:
        raise ValueError(
            f"mask must have shape {s[:-1]} (one entry per position of the logits {s}), "
            f"got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold booleans or 0/1 (True: a real token, False: padding)")


def kept_positions(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[N, V]`` rows of both logits at the positions the mask keeps (all without one)."""
    check_token_inputs(student_logits, teacher_logits, mask)
    v = student_logits.shape[-1]
    if mask is None:
        return student_logits.reshape(-1, v), teacher_logits.reshape(-1, v)
    keep = mask.bool()
    return student_logits[keep], teacher_logits[keep]


def token_log_probs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(z / T)`` of the student and the teacher at the kept positions, ``[N, V]``
    each (every input checked first)."""
    check_temperature_alpha(temperature)
    s, t = kept_positions(student_logits, teacher_logits, mask)
    return F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p_v (log p_v - log q_v)`` for each row of log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def mean_over_rows(values: torch.Tensor) -> torch.Tensor:
    """The mean of per-position values; 0 (still part of the graph) when no position is kept."""
    return values.sum() / max(values.numel(), 1)


def token_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Token-level KD, forward KL: ``T^2 * mean_{kept (b, l)} KL(p_t || p_s)`` at T.

    Introduced in notebook 15.

    ``p = softmax(z / T)`` over the vocabulary at each position; the mean runs over the
    positions where ``mask`` is True (every position without one). It is
    :func:`kdbook.losses.soft_kd_term` applied to each position as a sample (``T^2``
    included, so the gradient keeps its scale as T changes). Forward KL is
    *mode-covering*: the student pays wherever the teacher has mass and it has none. Word-level
    KD in Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016 (arXiv:1606.07947).

    Args:
        student_logits, teacher_logits: ``[B, L, V]`` (or ``[N, V]``), one vocabulary.
        mask: ``[B, L]`` booleans (or 0/1), True at real tokens; None keeps every position.
        temperature: T > 0.

    Returns:
        A scalar tensor.
    """
    log_s, log_t = token_log_probs(student_logits, teacher_logits, mask, temperature)
    return temperature**2 * mean_over_rows(kl_rows(log_t, log_s))


def reverse_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Reverse KL, the MiniLLM direction: ``T^2 * mean_{kept (b, l)} KL(p_s || p_t)`` at T.

    Introduced in notebook 16_on_policy_distillation.

    ``KL(p_s || p_t) = sum_v p_s(v) (log p_s(v) - log p_t(v))``: the student is charged only
    where it puts mass, so it may drop modes of the teacher and is *mode-seeking* (Gu et al.,
    "MiniLLM: Knowledge Distillation of Large Language Models", ICLR 2024,
    arXiv:2306.08543; MiniLLM minimises the sequence-level reverse KL by policy gradient, this
    is its per-token form). Masking, mean and ``T^2`` as :func:`token_kd_loss`.
    """
    log_s, log_t = token_log_probs(student_logits, teacher_logits, mask, temperature)
    return temperature**2 * mean_over_rows(kl_rows(log_s, log_t))


def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    beta: float = JSD_BETA,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The generalised Jensen-Shannon divergence of GKD, with TRL ``GKDTrainer``'s conventions.

    Introduced in notebook 16_on_policy_distillation.

    With ``p_t, p_s = softmax(z / T)`` and the mixture ``m = beta p_t + (1 - beta) p_s``::

        JSD_beta = beta KL(p_t || m) + (1 - beta) KL(p_s || m)    for 0 < beta < 1
                 = KL(p_t || p_s)  (forward KL)                    for beta = 0
                 = KL(p_s || p_t)  (reverse KL)                    for beta = 1

    averaged over the kept positions (TRL's ``batchmean`` over the completion tokens).
    ``log m`` is ``logsumexp(log p_s + log(1 - beta), log p_t + log beta)``, never the log of
    a sum of probabilities that underflow. Agarwal et al., "On-Policy Distillation of
    Language Models: Learning from Self-Generated Mistakes", ICLR 2024 (arXiv:2306.13649).

    .. warning:: As in TRL, beta weighs the *teacher* term, and 0 and 1 are the two KLs
       exactly; the mixture formula itself goes to 0 at both ends (its gradient, divided by
       beta or 1 - beta, goes to the KLs'). And as in TRL there is no ``T^2``: at T = 1
       beta = 0 is :func:`token_kd_loss`, elsewhere it is ``token_kd_loss / T^2``.

    Args:
        beta: in [0, 1], the teacher's weight in the mixture (TRL's ``beta``).
        The rest as :func:`token_kd_loss`.
    """
    check_jsd_beta(beta)
    log_s, log_t = token_log_probs(student_logits, teacher_logits, mask, temperature)
    if beta == 0:
        return mean_over_rows(kl_rows(log_t, log_s))
    if beta == 1:
        return mean_over_rows(kl_rows(log_s, log_t))
    b = torch.tensor(float(beta), dtype=log_s.dtype, device=log_s.device)
    log_m = torch.logsumexp(torch.stack([log_s + torch.log1p(-b), log_t + torch.log(b)]), dim=0)
    jsd = b * kl_rows(log_t, log_m) + (1 - b) * kl_rows(log_s, log_m)
    return mean_over_rows(jsd)


def token_mask(out: Outputs) -> torch.Tensor | None:
    """The padding mask a term reads from its outputs: targets that are not UNLABELED (-1)."""
    if out.targets is None or tuple(out.targets.shape) != tuple(out.logits.shape[:-1]):
        return None
    return out.targets != UNLABELED


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the positions whose target is not UNLABELED (padding)."""
    keep = targets != UNLABELED
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], targets[keep])


class TokenTerm(Term):
    """What the three token terms share: ``alpha * divergence + (1 - alpha) * CE`` per token.

    The divergence reads ``out.logits`` and ``out.teacher_logits`` (``[B, L, V]``) and the
    padding from ``out.targets`` (``[B, L]`` next tokens, UNLABELED at padding); alpha = 1
    (the default) is pure distillation, as in GKD and MiniLLM.
    """

    replaces_logit_kd = True

    def __init__(self, temperature: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__()
        check_temperature_alpha(temperature, alpha)
        self.temperature, self.alpha = temperature, alpha

    def divergence(self, out: Outputs, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, out: Outputs, progress: float):
        mask = token_mask(out)
        div = self.divergence(out, mask)
        loss = self.alpha * div
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * token_cross_entropy(out.logits, out.targets)
        return loss, {self.name: div.item()}


@register_term("token_kd")
class TokenKD(TokenTerm):
    """Forward-KL token distillation (:func:`token_kd_loss`) at T, alpha on the divergence."""

    def divergence(self, out: Outputs, mask: torch.Tensor | None) -> torch.Tensor:
        return token_kd_loss(out.logits, out.teacher_logits, mask, self.temperature)


@register_term("token_reverse_kl")
class TokenReverseKL(TokenTerm):
    """Reverse-KL token distillation (:func:`reverse_kl_loss`, MiniLLM's direction) at T."""

    def divergence(self, out: Outputs, mask: torch.Tensor | None) -> torch.Tensor:
        return reverse_kl_loss(out.logits, out.teacher_logits, mask, self.temperature)


@register_term("token_jsd")
class TokenJSD(TokenTerm):
    """GKD's generalised JSD (:func:`generalized_jsd_loss`, TRL's beta) at T."""

    def __init__(self, beta: float = JSD_BETA, temperature: float = 1.0, alpha: float = 1.0):
        super().__init__(temperature, alpha)
        check_jsd_beta(beta)
        self.beta = beta

    def divergence(self, out: Outputs, mask: torch.Tensor | None) -> torch.Tensor:
        return generalized_jsd_loss(
            out.logits, out.teacher_logits, mask, self.beta, self.temperature
        )
