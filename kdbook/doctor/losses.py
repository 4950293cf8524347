"""The doctor's detectors of a reader's KD and DKD losses, with the fix for each.

:func:`check_kd_loss` probes a user's KD loss on fixed random logits and compares what it
returns with :func:`kdbook.losses.kd_loss` and with the buggy variants found in the
sources (SOURCES.md, "Bugs in the sources"; :mod:`kdbook.losses.buggy`), so that it can
name the bug, not only say "wrong".

>>> from kdbook.losses import kd_loss
>>> check_kd_loss(kd_loss).ok
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdbook.doctor.diagnosis import Diagnosis, close
from kdbook.losses import (
    DKD_BETA,
    DKD_WARMUP,
    dkd_loss,
    dkd_objective,
    dkd_terms,
    dkd_warmup_weight,
    kd_loss,
    soft_kd_term,
)

KDLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]
PROBE_BATCH = 6  # samples in the probe batch (distinct from the class count on purpose)
PROBE_CLASSES = 10
PROBE_ALPHA = 0.7  # the book's default: the soft term weighs more than the cross-entropy


def _probe_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed logits and labels: a student that disagrees with a confident teacher."""
    g = torch.Generator().manual_seed(seed)
    student = 2.0 * torch.randn(PROBE_BATCH, PROBE_CLASSES, generator=g)
    teacher = 3.0 * torch.randn(PROBE_BATCH, PROBE_CLASSES, generator=g)
    targets = torch.randint(0, PROBE_CLASSES, (PROBE_BATCH,), generator=g)
    return student, teacher, targets


def _soft_variants(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> dict[tuple[str, ...], float]:
    """The soft term written every wrong way we know, keyed by the mistakes it contains.

    Each variant is ``factor * kl_div(input, target, reduction)`` with one choice per
    ingredient; the key lists the ingredients that differ from Hinton's
    ``T^2 * KL(softmax(t/T) || softmax(s/T))`` with ``batchmean``.
    """
    t = temperature
    log_s, log_t = F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1)
    forms = {  # (input, target, log_target) -> mistakes
        (): (log_s, log_t.exp(), False),
        ("log_target_missing",): (log_s, log_t, False),  # source 3
        ("prob_with_log_target",): (log_s, log_t.exp(), True),
        ("student_probs",): (log_s.exp(), log_t.exp(), False),
        ("reversed",): (log_t, log_s.exp(), False),
    }
    variants: dict[tuple[str, ...], float] = {}
    # 'mean' computed by hand: F.kl_div warns when asked for it (it will change meaning).
    divisors = {"batchmean": len(student), "mean": student.numel(), "sum": 1}
    for (form, (inp, tgt, flag)), reduction, squared in itertools.product(
        forms.items(), divisors, (True, False)
    ):
        kl = F.kl_div(inp, tgt, reduction="sum", log_target=flag).item() / divisors[reduction]
        key = form
        key += () if reduction == "batchmean" else (f"reduction_{reduction}",)
        key += () if squared else ("missing_T2",)
        variants[key] = (t**2 if squared else 1.0) * kl
    return variants


def _explain(mistake: str, temperature: float) -> str:
    t2 = temperature**2
    return {
        "missing_T2": (
            f"the soft term lacks the T^2 factor (it is 1/T^2 = 1/{t2:g} of the right value): "
            "multiply the KL by temperature**2, or its gradient shrinks like 1/T^2 and the "
            "cross-entropy drowns it"
        ),
        "reduction_mean": (
            "the KL uses reduction='mean', which divides by batch x classes (1/num_classes "
            "of the right value, source 4's bug): use reduction='batchmean'"
        ),
        "reduction_sum": (
            "the KL uses reduction='sum', so the loss grows with the batch size: "
            "use reduction='batchmean'"
        ),
        "log_target_missing": (
            "the teacher's log-probabilities are the KL target without log_target=True "
            "(source 3's bug; PyTorch returns NaN): pass softmax(teacher/T) as the target, "
            "or keep log_softmax and add log_target=True"
        ),
        "prob_with_log_target": (
            "log_target=True but the target holds probabilities: pass "
            "log_softmax(teacher/T) with log_target=True, or softmax(teacher/T) without it"
        ),
        "student_probs": (
            "kl_div's input holds the student's probabilities; it expects "
            "log-probabilities: use log_softmax(student/T)"
        ),
        "reversed": (
            "the KL is reversed, KL(student || teacher): F.kl_div(input, target) computes "
            "KL(target || input), so the student's log-probabilities go first, the "
            "teacher's distribution second"
        ),
    }[mistake]


def _call(fn: KDLossFn, *args) -> tuple[torch.Tensor | None, str | None]:
    """Call the user's loss; return the value or a sentence saying what went wrong."""
    try:
        value = fn(*args)
    except Exception as e:  # the user's code may raise anything: report it, do not crash
        return None, f"calling the loss raised {type(e).__name__}: {e}"
    if not isinstance(value, torch.Tensor):
        return None, (
            f"the loss returned a {type(value).__name__}, not a tensor: backward() needs the "
            "tensor (do not call .item() inside the loss)"
        )
    if value.numel() != 1:
        return None, (
            f"the loss returned shape {tuple(value.shape)}, not a scalar: reduce it "
            "(reduction='batchmean' for the KL, the default mean for the cross-entropy)"
        )
    return value, None


def _term_problems(
    values: dict[float, float], s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature
) -> tuple[list[str], bool, float]:
    """The loss at alpha 0, 1 and PROBE_ALPHA against kd_loss: problems, right, soft alpha."""
    problems: list[str] = []
    ce = F.cross_entropy(s, y).item()
    right = all(close(values[a], kd_loss(s, t, y, temperature, a).item()) for a in values)
    swapped = close(values[1.0], ce) and not close(values[0.0], ce)
    soft_alpha = 0.0 if swapped else 1.0
    if not right:
        if swapped:
            problems.append(
                "alpha weights the cross-entropy instead of the soft term (source 3's "
                "convention; at alpha=1 only the cross-entropy is left): write "
                "alpha * soft + (1 - alpha) * CE, or call it with 1 - alpha"
            )
        elif not close(values[0.0], ce) and not math.isnan(values[1.0]):
            # (0 * NaN is NaN: a NaN soft term spoils alpha=0 too; it is named below)
            problems.append(
                f"at alpha=0 (cross-entropy only) the loss is {values[0.0]:.4f}, "
                f"F.cross_entropy(student_logits, targets) is {ce:.4f}: the hard term is the "
                "plain cross-entropy of the unsoftened logits, weighted by 1 - alpha"
            )
        soft = values[soft_alpha]
        right_soft = soft_kd_term(s, t, temperature).item()
        if not close(soft, right_soft):
            matches = [k for k, v in _soft_variants(s, t, temperature).items() if close(soft, v)]
            if matches:
                problems += [_explain(m, temperature) for m in min(matches, key=len)]
            else:
                problems.append(
                    f"the soft term alone (alpha={soft_alpha:g}) is {soft:.4f}, "
                    f"T^2 * KL(teacher || student) is {right_soft:.4f} (ratio "
                    f"{soft / right_soft:.4g}): compare yours with kdbook.losses.soft_kd_term"
                )
        mix_weight = 1 - PROBE_ALPHA if swapped else PROBE_ALPHA
        mixed = mix_weight * values[soft_alpha] + (1 - mix_weight) * values[1 - soft_alpha]
        if not close(values[PROBE_ALPHA], mixed):
            problems.append(
                f"the loss at alpha={PROBE_ALPHA} is not the weighted sum of the two terms "
                "(its values at alpha=1 and alpha=0): mix them as "
                "alpha * soft + (1 - alpha) * CE"
            )

    return problems, right, soft_alpha


def _invariance_problems(
    fn: KDLossFn, s, t, y, temperature: float, soft_alpha: float, value: float
) -> list[str]:
    """Student == teacher must give a soft term of 0; a doubled batch the same loss."""
    problems: list[str] = []
    same, error = _call(fn, s, s.clone(), y, temperature, soft_alpha)
    if error:
        problems.append(error)
    elif not close(same.item(), 0.0):
        problems.append(
            f"with student == teacher the soft term is {same.item():.4g}, not 0: the KL of a "
            "distribution with itself is 0 (check which side gets log_softmax and log_target)"
        )
    doubled, error = _call(
        fn, torch.cat([s, s]), torch.cat([t, t]), torch.cat([y, y]), temperature, PROBE_ALPHA
    )
    if error:
        problems.append(error)
    elif not close(doubled.item(), value):
        problems.append(
            f"duplicating the batch changes the loss from {value:.4f} to "
            f"{doubled.item():.4f}: a per-sample mean must not depend on the batch size "
            "(use reduction='batchmean', not 'sum')"
        )
    return problems


def check_kd_loss(
    fn: KDLossFn,
    *,
    temperature: float = 4.0,
    convention: str = "hinton",
    warmup: float = DKD_WARMUP,
) -> Diagnosis:
    """Probe ``fn(student_logits, teacher_logits, targets, temperature, alpha)`` and name its bugs.

    Introduced in notebook 04_loss.

    ``convention="dkd"`` checks a decoupled-KD training loss instead,
    ``fn(student_logits, teacher_logits, targets, temperature, beta, progress)``, against
    :func:`kdbook.losses.dkd_objective` (see :func:`_check_dkd`): ``warmup`` is the
    fraction of training its DKD term ramps up over.

    The right answer is Hinton's loss with alpha weighting the soft term (the book's
    convention, :func:`kdbook.losses.kd_loss`):
    ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    ``fn`` is called on fixed random logits at alpha = 0 (cross-entropy only), 1 (soft
    term only) and 0.7, then with the student equal to the teacher (the soft term must be
    0) and with the batch duplicated (a mean must not change). The soft term is matched
    against the known wrong variants: a missing T^2 (1/T^2 of the value), reduction
    'mean' (1/num_classes) or 'sum', log-probability targets without ``log_target=True``
    (source 3), probabilities as kl_div's input, a reversed KL; and the whole loss
    against the swapped alpha convention (``kd_loss`` with ``1 - alpha``).

    Args:
        fn: the loss to check.
        temperature: T used for the probe; must differ from 1 (at T = 1 a missing T^2
            is invisible).

    Returns:
        A :class:`Diagnosis`: ``ok`` or one problem per mistake, each with its fix.
    """
    if not (temperature > 0 and temperature != 1):
        raise ValueError(f"temperature must be > 0 and != 1, got {temperature!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a callable loss function, got {fn!r}")
    if convention not in ("hinton", "dkd"):
        raise ValueError(f"convention must be 'hinton' or 'dkd', got {convention!r}")
    if convention == "dkd":
        return _check_dkd(fn, temperature, warmup)
    s, t, y = _probe_inputs()
    student = s.clone().requires_grad_(True)
    value, error = _call(fn, student, t, y, temperature, PROBE_ALPHA)
    if error:
        return Diagnosis(False, [error])
    if not value.requires_grad:
        return Diagnosis(
            False,
            [
                "the loss carries no gradient to student_logits (a .detach(), .item() or "
                "torch.no_grad() inside it?): the student could not learn from it"
            ],
        )
    values = {PROBE_ALPHA: value.item()}
    for a in (0.0, 1.0):
        v, error = _call(fn, s, t, y, temperature, a)
        if error:
            return Diagnosis(False, [error])
        values[a] = v.item()

    problems, right, soft_alpha = _term_problems(values, s, t, y, temperature)
    problems += _invariance_problems(fn, s, t, y, temperature, soft_alpha, values[PROBE_ALPHA])
    if not problems and not right:
        problems.append("the loss differs from kd_loss in a way this check does not recognise")
    return Diagnosis(not problems, problems)


def _dkd_variants(
    s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float, beta: float
) -> dict[str, float]:
    """The DKD term (past the warm-up) written the wrong ways we know, by mistake."""
    tckd, nckd = dkd_terms(s, t, y, temperature)
    t2 = temperature**2
    log_s, log_t = F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1)
    full = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(1) * t2
    off = 1 - F.one_hot(y, s.shape[1])  # the non-target entries of the full softmax
    cut = (log_t.exp() * (log_t - log_s) * off).sum(1) * t2
    ce = F.cross_entropy(s, y).item()
    return {
        "target_in_nckd": ce + (tckd + beta * full).mean().item(),
        "target_cut_after_softmax": ce + (tckd + beta * cut).mean().item(),
        "beta_on_tckd": ce + (beta * tckd + nckd).mean().item(),
        "missing_T2": ce + (tckd + beta * nckd).mean().item() / t2,
        "no_cross_entropy": (tckd + beta * nckd).mean().item(),
    }


def _explain_dkd(mistake: str, temperature: float) -> str:
    return {
        "target_in_nckd": (
            "the target class is left in the non-target softmax: NCKD must compare the "
            "teacher's and student's distributions over the C - 1 other classes, "
            "renormalised without the target (softmax of the non-target logits only); with "
            "the target kept, NCKD is plain KD and beta weighs it all"
        ),
        "target_cut_after_softmax": (
            "the target class is dropped after the softmax, not before: the non-target "
            "probabilities then do not sum to 1 (they carry the factor 1 - p_target that DKD "
            "removes); take the softmax of the non-target logits only"
        ),
        "beta_on_tckd": (
            "beta weighs TCKD instead of NCKD: DKD is TCKD + beta * NCKD (beta 8 on the "
            "non-target part)"
        ),
        "missing_T2": (
            f"the DKD term lacks the T^2 factor (it is 1/T^2 = 1/{temperature**2:g} of the "
            "right value): multiply TCKD and NCKD by temperature**2"
        ),
        "no_cross_entropy": (
            "the cross-entropy on the labels is missing: DKD trains with CE(s, y) + the "
            "warmed-up DKD term"
        ),
    }[mistake]


def _warmup_problem(
    fn: Callable[..., torch.Tensor], s, t, y, temperature: float, beta: float, warmup: float
) -> str | None:
    """The user's warm-up against ``min(progress / warmup, 1)`` on the DKD term alone."""
    ce = F.cross_entropy(s, y).item()
    dkd = dkd_loss(s, t, y, temperature, beta).item()
    points = [0.0, warmup / 2, warmup, (1 + warmup) / 2, 1.0]
    values = {}
    for p in points:
        value, error = _call(fn, s, t, y, temperature, beta, p)
        if error:
            return error
        values[p] = value.item()
    weights = {p: (v - ce) / dkd for p, v in values.items()}
    if all(close(weights[p], dkd_warmup_weight(p, warmup)) for p in points):
        return None
    if close(values[0.0], 0.0) and all(
        close(values[p], dkd_warmup_weight(p, warmup) * (ce + dkd)) for p in points
    ):
        return (
            "the warm-up scales the cross-entropy too (the loss is 0 at progress 0): only "
            "the DKD term ramps up, the cross-entropy has its full weight from the start"
        )
    if all(close(w, 1.0) for w in weights.values()):
        return (
            f"the DKD term has no warm-up (full weight at progress 0): scale it by "
            f"min(progress / warmup, 1), warmup = {warmup:.4g} of training (the paper's "
            "20 of 240 epochs)"
        )
    half = weights[warmup / 2]
    ramp = f"about {warmup / 2 / half:.3g}" if half > 0 else "a later point"
    weights_text = ", ".join(f"{p:.3g}: {w:.3g}" for p, w in weights.items())
    return (
        f"the warm-up does not follow min(progress / warmup, 1) with warmup = {warmup:.4g} "
        f"of training: the DKD term's weight by progress is {{{weights_text}}} (full weight "
        f"reached at {ramp}); ramp it linearly over the first {warmup:.4g} of training, by "
        "progress, not by epoch count"
    )


def _check_dkd(fn: Callable[..., torch.Tensor], temperature: float, warmup: float) -> Diagnosis:
    """``fn(s, t, y, temperature, beta, progress)`` against :func:`dkd_objective`.

    Past the warm-up (progress 1) the loss must be ``CE + TCKD + beta * NCKD``; a mismatch
    is matched against the known wrong forms (the target class left in NCKD's softmax, or
    cut out after it; beta on TCKD; a missing T^2; no cross-entropy). Then the warm-up is
    probed at progress 0, warmup / 2, warmup, and after: only the DKD term may ramp, as
    ``min(progress / warmup, 1)``.
    """
    dkd_warmup_weight(0.0, warmup)  # checks warmup
    summary = "matches dkd_objective (CE + warmed-up TCKD + beta * NCKD)"
    s, t, y = _probe_inputs()
    beta = DKD_BETA
    student = s.clone().requires_grad_(True)
    value, error = _call(fn, student, t, y, temperature, beta, 1.0)
    if error:
        return Diagnosis(False, [error])
    if not value.requires_grad:
        return Diagnosis(False, ["the loss carries no gradient to student_logits"])
    right = dkd_objective(s, t, y, temperature, beta, 1.0, warmup=warmup).item()
    if not close(value.item(), right):
        matches = [k for k, v in _dkd_variants(s, t, y, temperature, beta).items()
                   if close(value.item(), v)]  # fmt: skip
        if matches:
            return Diagnosis(False, [_explain_dkd(m, temperature) for m in matches])
        return Diagnosis(
            False,
            [
                f"past the warm-up the loss is {value.item():.4f}, CE + TCKD + beta * NCKD is "
                f"{right:.4f}: compare yours with kdbook.losses.dkd_terms"
            ],
        )
    problem = _warmup_problem(fn, s, t, y, temperature, beta, warmup)
    return Diagnosis(problem is None, [problem] if problem else [], summary)
