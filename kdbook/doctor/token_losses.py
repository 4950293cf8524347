"""The doctor's detectors of a reader's token-level distillation loss: the KL direction, the
padding mask, the temperature on both sides, log-probabilities as targets (notebook 16).

:func:`check_token_loss` probes ``fn(student_logits, teacher_logits, mask, temperature)`` on
fixed ``[B, L, V]`` logits with ragged padding and names every mistake it recognises; the four
``check_*`` functions below it report one mistake each. The wrong variants it matches are
built here from their ingredients; :mod:`kdbook.losses.buggy_tokens` holds them written out as
a reader would, and the tests check that each is named.

>>> from kdbook.losses import token_kd_loss, reverse_kl_loss
>>> check_token_loss(token_kd_loss).ok, check_token_loss(reverse_kl_loss).ok
(True, False)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdbook.doctor.diagnosis import Diagnosis, close
from kdbook.losses.tokens import (
    check_jsd_beta,
    generalized_jsd_loss,
    reverse_kl_loss,
    token_kd_loss,
)

TokenLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
DIVERGENCES = ("forward", "reverse", "jsd")
PROBE_SHAPE = (3, 5, 7)  # batch, length, vocabulary of the probe
PROBE_LENGTHS = (5, 3, 2)  # real tokens per sequence; the rest is padding

# what each detector looks for -> the mistakes (variant ingredients) it reports
DETECTORS = {
    "direction": ("direction_swapped",),
    "padding": ("mask_ignored", "mask_mean_over_all"),
    "temperature": ("temperature_student_only", "temperature_teacher_only", "temperature_none"),
    "targets": ("log_probs_as_targets", "probs_with_log_target"),
}


def probe_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed student and teacher logits ``PROBE_SHAPE`` and the padding mask of PROBE_LENGTHS."""
    g = torch.Generator().manual_seed(seed)
    student = 2.0 * torch.randn(*PROBE_SHAPE, generator=g)
    teacher = 3.0 * torch.randn(*PROBE_SHAPE, generator=g)
    lengths = torch.tensor(PROBE_LENGTHS)
    mask = torch.arange(PROBE_SHAPE[1])[None, :] < lengths[:, None]
    return student, teacher, mask


def reference_loss(divergence: str, beta: float) -> TokenLossFn:
    """The package's loss for ``divergence`` ('forward', 'reverse' or 'jsd' at ``beta``)."""
    if divergence == "forward":
        return token_kd_loss
    if divergence == "reverse":
        return reverse_kl_loss
    return lambda s, t, m, temperature: generalized_jsd_loss(s, t, m, beta, temperature)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor, targets: str) -> torch.Tensor:
    """``KL(p || q)`` per row as ``F.kl_div(log_q, target)`` computes it for a target form."""
    if targets == "log_probs_as_targets":
        return F.kl_div(log_q, log_p, reduction="none").sum(-1)
    if targets == "probs_with_log_target":
        return F.kl_div(log_q, log_p.exp(), reduction="none", log_target=True).sum(-1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _variant(
    s: torch.Tensor,
    t: torch.Tensor,
    temperature: float,
    divergence: str,
    beta: float,
    mistakes: dict[str, str],
) -> torch.Tensor:
    """The loss on all-real ``[N, V]`` rows with the given ingredients (``mistakes``)."""
    sides = {
        "temperature_student_only": (temperature, 1.0),
        "temperature_teacher_only": (1.0, temperature),
        "temperature_none": (1.0, 1.0),
    }.get(mistakes["temperature"], (temperature, temperature))
    log_s = F.log_softmax(s / sides[0], dim=-1)
    log_t = F.log_softmax(t / sides[1], dim=-1)
    if mistakes["direction"] == "direction_swapped":
        log_s, log_t = log_t, log_s
    form = mistakes["targets"]
    if divergence == "forward" or (divergence == "jsd" and beta == 0):
        rows = _kl(log_t, log_s, form)
    elif divergence == "reverse" or beta == 1:
        rows = _kl(log_s, log_t, form)
    else:
        b = torch.tensor(beta, dtype=log_s.dtype)
        log_m = torch.logsumexp(torch.stack([log_s + torch.log1p(-b), log_t + b.log()]), dim=0)
        rows = b * _kl(log_t, log_m, form) + (1 - b) * _kl(log_s, log_m, form)
    expected_t2 = divergence != "jsd"
    squared = expected_t2 != (mistakes["t2"] == "t2_wrong")
    return (temperature**2 if squared else 1.0) * rows.mean()


def _evaluate(fn: TokenLossFn, s, t, mask, temperature) -> tuple[float, torch.Tensor, str | None]:
    """The user's loss value and its gradient with respect to ``s``, or what went wrong."""
    student = s.clone().requires_grad_(True)
    try:
        value = fn(student, t, mask, temperature)
    except Exception as e:  # the reader's code may raise anything: report it, do not crash
        return float("nan"), torch.zeros(0), f"calling the loss raised {type(e).__name__}: {e}"
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        what = type(value).__name__ if not isinstance(value, torch.Tensor) else value.shape
        return float("nan"), torch.zeros(0), f"the loss must return a scalar tensor, got {what}"
    if not value.requires_grad:
        return value.item(), torch.zeros(0), "the loss carries no gradient to student_logits"
    (grad,) = torch.autograd.grad(value, student)
    return value.item(), grad, None


def _same(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor]) -> bool:
    """Equal values, or (a NaN value hides the rest) equal gradients."""
    if a[0] == a[0] and b[0] == b[0]:
        return close(a[0], b[0])
    return a[0] != a[0] and b[0] != b[0] and torch.allclose(a[1], b[1], rtol=1e-4, atol=1e-6)


EXPLAIN = {
    "direction_swapped": (
        "the KL runs the other way: F.kl_div(input, target) is KL(target || input), so forward "
        "KL (teacher || student) takes the student's log-probabilities as input and reverse KL "
        "the teacher's; for the JSD, beta weighs the other side (TRL's beta weighs the teacher)"
    ),
    "mask_ignored": (
        "the padding mask is ignored: padded positions change the loss and get gradient; keep "
        "only the positions where the mask is True (logits[mask]) before the divergence"
    ),
    "mask_mean_over_all": (
        "the padding is zeroed but the mean runs over every position (divided by mask.numel() "
        "or B * L): the loss shrinks with the share of padding; divide by mask.sum()"
    ),
    "temperature_student_only": (
        "only the student's logits are divided by T: divide the teacher's by the same T, or the "
        "student must match the teacher's sharp distribution with softened logits"
    ),
    "temperature_teacher_only": (
        "only the teacher's logits are divided by T: divide the student's by the same T"
    ),
    "temperature_none": "neither side is divided by T: use softmax(logits / T) on both",
    "log_probs_as_targets": (
        "the target holds log-probabilities but F.kl_div reads probabilities (no "
        "log_target=True): the value is NaN and the gradient has no minimum; pass "
        "log_target=True, or the probabilities"
    ),
    "probs_with_log_target": (
        "log_target=True but the target holds probabilities: pass log-probabilities with "
        "log_target=True, or probabilities without it"
    ),
    "t2_wrong": (
        "the T^2 factor is wrong: the KL losses (like kd_loss) are multiplied by T^2, TRL's "
        "generalised JSD is not"
    ),
}


def _padding_mistakes(fn: TokenLossFn, s, t, mask, temperature) -> tuple[list[str], list[str]]:
    """Padding mistakes (by key) and errors, from the mask probe: with padding, without it."""
    masked = _evaluate(fn, s, t, mask, temperature)
    if masked[2]:
        return [], [masked[2]]
    packed_s, packed_t = s[mask].unsqueeze(0), t[mask].unsqueeze(0)
    all_real = torch.ones(packed_s.shape[:2], dtype=torch.bool)
    packed = _evaluate(fn, packed_s, packed_t, all_real, temperature)
    if packed[2]:
        return [], [packed[2]]
    padded_grad = masked[1][~mask]
    if padded_grad.abs().max() > 1e-7:
        return ["mask_ignored"], []
    kept = (masked[0], masked[1][mask].unsqueeze(0))
    if _same(kept, packed):
        return [], []
    share = mask.sum().item() / mask.numel()
    if _same(kept, (packed[0] * share, packed[1] * share)):
        return ["mask_mean_over_all"], []
    return [], [
        f"the loss with padding ({masked[0]:.4g}) differs from the loss on the real tokens "
        f"alone ({packed[0]:.4g}), and not in a way this check recognises: average over the "
        "positions where the mask is True"
    ]


def diagnose_token_loss(
    fn: TokenLossFn, divergence: str = "forward", *, beta: float = 0.5, temperature: float = 2.0
) -> tuple[list[str], list[str]]:
    """The mistakes ``fn`` makes (keys of :data:`EXPLAIN`) and the problems it has otherwise."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    check_jsd_beta(beta)
    if not (temperature > 0 and temperature != 1):
        raise ValueError(f"temperature must be > 0 and != 1, got {temperature!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a callable loss function, got {fn!r}")
    s, t, mask = probe_inputs()
    mistakes, errors = _padding_mistakes(fn, s, t, mask, temperature)
    if errors:
        return mistakes, errors
    full = torch.ones(mask.shape, dtype=torch.bool)
    user = _evaluate(fn, s, t, full, temperature)
    right = reference_loss(divergence, beta)
    expected = _evaluate(right, s, t, full, temperature)
    if _same(user, expected):
        return mistakes, []
    choices = {
        "direction": ("right", "direction_swapped"),
        "temperature": ("right", *DETECTORS["temperature"]),
        "targets": ("right", *DETECTORS["targets"]),
        "t2": ("right", "t2_wrong"),
    }
    matches = []
    for picked in itertools.product(*choices.values()):
        ingredients = dict(zip(choices, picked, strict=True))
        key = [v for v in picked if v != "right"]

        def variant(a, b, m, temp, ingredients=ingredients):
            flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
            return _variant(flat_a, flat_b, temp, divergence, beta, ingredients)

        if key and _same(user, _evaluate(variant, s, t, full, temperature)):
            matches.append(key)
    if matches:
        return mistakes + min(matches, key=len), []
    return mistakes, [
        f"on real tokens only the loss is {user[0]:.4g}, kdbook's {divergence} is "
        f"{expected[0]:.4g}: it differs in a way this check does not recognise"
    ]


def check_token_loss(
    fn: TokenLossFn,
    divergence: str = "forward",
    *,
    beta: float = 0.5,
    temperature: float = 2.0,
) -> Diagnosis:
    """Probe ``fn(student_logits, teacher_logits, mask, temperature)`` and name its mistakes.

    Introduced in notebook 16_on_policy_distillation.

    The right answer is the package's: ``divergence='forward'``
    (:func:`kdbook.losses.token_kd_loss`), ``'reverse'`` (:func:`kdbook.losses.reverse_kl_loss`)
    or ``'jsd'`` (:func:`kdbook.losses.generalized_jsd_loss` at ``beta``; wrap yours as
    ``lambda s, t, m, T: my_jsd(s, t, m, beta=0.3, temperature=T)``). The probe is ``[3, 5, 7]``
    logits, sequences of 5, 3 and 2 real tokens. First the padding: the gradient at padded
    positions must be 0 and the loss must equal the loss of the real tokens packed into one
    sequence. Then, on real tokens only, the value (its gradient, where the value is NaN) is
    matched against every combination of a swapped KL direction, the temperature on one side
    or none, log-probabilities as targets (or probabilities with ``log_target=True``) and a
    wrong ``T^2``.

    Returns:
        A :class:`Diagnosis`: ``ok``, or one sentence per mistake with its fix.
    """
    mistakes, errors = diagnose_token_loss(fn, divergence, beta=beta, temperature=temperature)
    problems = [EXPLAIN[m] for m in mistakes] + errors
    return Diagnosis(not problems, problems, f"matches kdbook's {divergence} token loss")


def _one_detector(
    name: str, fn: TokenLossFn, divergence: str, beta: float, temperature: float
) -> Diagnosis:
    mistakes, errors = diagnose_token_loss(fn, divergence, beta=beta, temperature=temperature)
    found = [EXPLAIN[m] for m in mistakes if m in DETECTORS[name]]
    if errors and not mistakes:
        found += errors  # the probe could not run, or the loss is wrong in an unknown way
    return Diagnosis(not found, found, f"no {name} mistake")


def check_kl_direction(
    fn: TokenLossFn, divergence: str = "forward", *, beta: float = 0.5, temperature: float = 2.0
) -> Diagnosis:
    """Is the KL the right way round (or, for the JSD, beta on the teacher's side)?

    One of :func:`check_token_loss`'s detectors, alone; same arguments.
    """
    return _one_detector("direction", fn, divergence, beta, temperature)


def check_padding_mask(
    fn: TokenLossFn, divergence: str = "forward", *, beta: float = 0.5, temperature: float = 2.0
) -> Diagnosis:
    """Does the loss ignore padded positions and average over the real ones only?"""
    return _one_detector("padding", fn, divergence, beta, temperature)


def check_temperature_sides(
    fn: TokenLossFn, divergence: str = "forward", *, beta: float = 0.5, temperature: float = 2.0
) -> Diagnosis:
    """Are both the student's and the teacher's logits divided by the same T?"""
    return _one_detector("temperature", fn, divergence, beta, temperature)


def check_log_prob_targets(
    fn: TokenLossFn, divergence: str = "forward", *, beta: float = 0.5, temperature: float = 2.0
) -> Diagnosis:
    """Does ``F.kl_div`` get its target in the form it reads (``log_target`` right)?"""
    return _one_detector("targets", fn, divergence, beta, temperature)
