"""The doctor's check of a reader's distillation step, written by hand (notebook 05).

:func:`check_kd_step` runs a reader's ``step(student, teacher, x, y, optimizer, temperature,
alpha)`` on small fixed models and compares the student's weights after it with those one
step of :func:`kdbook.train.fit` leaves (Hinton's loss, :func:`kdbook.losses.kd_loss`, then
one optimizer step), so that it names the usual mistakes instead of only saying "wrong".

>>> import torch.nn.functional as F
>>> from kdbook.losses import kd_loss
>>> def step(student, teacher, x, y, optimizer, temperature, alpha):
...     teacher.eval()
...     with torch.no_grad():
...         teacher_logits = teacher(x)
...     loss = kd_loss(student(x), teacher_logits, y, temperature, alpha)
...     optimizer.zero_grad()
...     loss.backward()
...     optimizer.step()
>>> check_kd_step(step).ok
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kdbook.doctor.diagnosis import Diagnosis
from kdbook.runtime import UNLABELED

KDStepFn = Callable[..., object]
STEP_TEMPERATURE, STEP_ALPHA, STEP_LR = 4.0, 0.7, 0.5  # a large lr makes each mistake visible
_FEATURES, _CLASSES, _BATCH, _HIDDEN = 6, 5, 8, 3  # _HIDDEN labels of the batch are hidden


def _probe_models() -> tuple[nn.Module, nn.Module]:
    """A student and a teacher with BatchNorm and Dropout (where train mode shows)."""
    g = torch.Generator().manual_seed(0)
    student = nn.Sequential(nn.Linear(_FEATURES, 12), nn.ReLU(), nn.Linear(12, _CLASSES))
    teacher = nn.Sequential(
        nn.Linear(_FEATURES, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, _CLASSES),
    )
    with torch.no_grad():
        for p in [*student.parameters(), *teacher.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g))
        teacher[1].running_mean.copy_(torch.randn(16, generator=g))
        teacher[1].running_var.copy_(torch.rand(16, generator=g) + 0.5)
    return student, teacher


def _probe_batch(hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed inputs and labels, the first ``hidden`` labels set to UNLABELED."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(_BATCH, _FEATURES, generator=g)
    y = torch.randint(0, _CLASSES, (_BATCH,), generator=g)
    y[:hidden] = UNLABELED
    return x, y


def _reference(
    student: nn.Module, teacher: nn.Module, x, y, mistake: str | None = None
) -> list[torch.Tensor]:
    """The student's weights after one right step, or after one with ``mistake``."""
    student.train()
    t, a = STEP_TEMPERATURE, STEP_ALPHA
    opt = torch.optim.SGD(student.parameters(), lr=STEP_LR)
    if mistake == "no_zero_grad":
        _stale_grads(student)
    else:
        opt.zero_grad()
    with torch.no_grad():
        teacher_logits = teacher.eval()(x)
    logits = student(x)
    labelled = y != UNLABELED
    soft_rows = labelled if mistake == "soft_labelled_only" else torch.ones_like(labelled)
    log_s = F.log_softmax(logits[soft_rows] / t, 1)
    log_t = F.log_softmax(teacher_logits[soft_rows] / t, 1)
    if mistake == "reversed":
        kl = (log_s.exp() * (log_s - log_t)).sum() / len(log_s)
    else:
        kl = F.kl_div(log_s, log_t, reduction="sum", log_target=True) / len(log_s)
    if mistake == "reduction_mean":
        kl = kl / _CLASSES
    soft = kl if mistake == "missing_T2" else t**2 * kl
    ce = F.cross_entropy(logits[labelled], y[labelled], reduction="sum")
    hard = ce / (len(y) if mistake == "hard_over_batch" else max(1, int(labelled.sum())))
    if mistake == "alpha_on_ce":
        a = 1 - a
    loss = a * soft + (1 - a) * hard
    loss.backward()
    opt.step()
    return [p.detach().clone() for p in student.parameters()]


_EXPLAIN = {
    "missing_T2": (
        "the soft term lacks the T^2 factor: multiply the KL by temperature**2, or its "
        "gradient shrinks like 1/T^2 and the cross-entropy drowns it"
    ),
    "soft_labelled_only": (
        "the soft term skips the unlabelled images: every image gets the teacher's soft "
        "targets; only the hard term needs a label (mask it with y != UNLABELED)"
    ),
    "hard_over_batch": (
        "the cross-entropy is averaged over the whole batch, unlabelled images included: "
        "average it over the labelled rows only (y != UNLABELED), as kd_loss does"
    ),
    "alpha_on_ce": (
        "alpha weights the cross-entropy instead of the soft term: write "
        "alpha * soft + (1 - alpha) * hard (the book's convention)"
    ),
    "reduction_mean": (
        "the KL uses reduction='mean' (divides by batch x classes): use reduction='batchmean'"
    ),
    "reversed": (
        "the KL is reversed, KL(student || teacher): F.kl_div takes the student's "
        "log-probabilities first and the teacher's distribution second"
    ),
    "no_zero_grad": (
        "the gradients of an earlier step were still there and were added to this one: "
        "call optimizer.zero_grad() before backward()"
    ),
}


def _stale_grads(model: nn.Module) -> None:
    """Leave gradients in ``model`` as a previous step without zero_grad would."""
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(u, v, rtol=1e-4, atol=1e-6) for u, v in zip(a, b, strict=True))


class _Call(NamedTuple):
    """What one call of the reader's step left: the models, an error sentence or None,
    whether autograd was on in each teacher forward pass, and what the step returned."""

    student: nn.Module
    teacher: nn.Module
    error: str | None
    teacher_with_grad: list[bool]
    value: object


def _error(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    if "out of bounds" in text or "-1" in text:
        return (
            f"the step raised {text}: the hidden labels (UNLABELED = {UNLABELED}) reached the "
            "cross-entropy; compute the hard term on the labelled rows only "
            "(labelled = y != UNLABELED)"
        )
    return f"calling the step raised {text}"


def _run(fn: KDStepFn, teacher_mode: str, hidden: int) -> _Call:
    """Call ``fn`` on fresh probe models, the student holding stale gradients."""
    student, teacher = _probe_models()
    teacher.train(teacher_mode == "train")
    student.train()
    _stale_grads(student)
    x, y = _probe_batch(hidden)
    opt = torch.optim.SGD(student.parameters(), lr=STEP_LR)
    with_grad: list[bool] = []
    handle = teacher.register_forward_hook(lambda *_: with_grad.append(torch.is_grad_enabled()))
    value, error = None, None
    try:
        value = fn(student, teacher, x, y, opt, STEP_TEMPERATURE, STEP_ALPHA)
    except NotImplementedError:
        error = "not answered yet: write the step, then run the check"
    except Exception as e:  # the reader's code may raise anything: report it
        error = _error(e)
    finally:
        handle.remove()
    return _Call(student, teacher, error, with_grad, value)


def _finite(call: _Call) -> bool:
    """No NaN in the weights, nor in the loss the step returned (if it returned one)."""
    if not all(torch.isfinite(p).all() for p in call.student.parameters()):
        return False
    value = call.value
    return not isinstance(value, torch.Tensor | float) or math.isfinite(float(value))


def _teacher_problems(call: _Call) -> list[str]:
    if any(p.grad is not None for p in call.teacher.parameters()):
        return [
            "gradients flowed into the teacher (its parameters have .grad): compute its "
            "logits under torch.no_grad(), so the loss sends nothing back into it"
        ]
    if any(call.teacher_with_grad):
        return [
            "the teacher's forward pass ran with autograd on: it recorded a graph and kept "
            "activations for a backward pass that never comes (.detach() afterwards does not "
            "undo that); run it inside `with torch.no_grad():`"
        ]
    return []


def _weight_problems(call: _Call) -> list[str]:
    """The student's weights after the step against fit's step and the known mistakes."""
    got = [p.detach() for p in call.student.parameters()]
    start, teacher = _probe_models()
    x, y = _probe_batch(_HIDDEN)
    if _same(got, [p.detach() for p in start.parameters()]):
        return ["the student's weights did not change: call loss.backward(), then optimizer.step()"]
    if _same(got, _reference(start, teacher, x, y)):
        return []
    for mistake, why in _EXPLAIN.items():
        student, teacher = _probe_models()
        if _same(got, _reference(student, teacher, x, y, mistake)):
            return [why]
    return [
        "the student's weights after the step differ from those of fit's step: compare "
        "your loss with kdbook.losses.kd_loss on the same logits (notebook 04)"
    ]


def check_kd_step(fn: KDStepFn) -> Diagnosis:
    """Check a reader's distillation step against the step :func:`kdbook.train.fit` takes.

    Introduced in notebook 05_distillation.

    ``fn(student, teacher, x, y, optimizer, temperature, alpha)`` must, on one batch: run
    the teacher in eval mode under ``torch.no_grad()``, the student forward, Hinton's loss
    ``alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE`` with the cross-entropy
    over the labelled rows only (``y != UNLABELED``; the soft term covers every row, and a
    batch without a label has no hard term), then ``zero_grad``, ``backward`` and
    ``optimizer.step()``. It is called three times on small fixed models: with the teacher
    in train mode, with stale gradients and some labels hidden, with every label hidden.

    Returns:
        A :class:`Diagnosis` naming the usual mistakes: the teacher left in train mode,
        its forward pass recorded for autograd or gradients flowing into it, T^2 missing,
        the mask ignored or applied to the soft term too, alpha on the wrong term, a missing
        ``zero_grad`` or ``optimizer.step()``.
    """
    problems: list[str] = []
    # 1. handed a teacher in train mode, the step puts it in eval mode
    call = _run(fn, "train", hidden=_HIDDEN)
    if call.error:
        return Diagnosis(False, [call.error])
    _, fresh = _probe_models()
    moved = not torch.equal(call.teacher[1].running_mean, fresh[1].running_mean)
    if call.teacher.training or moved:
        problems.append(
            "the teacher ran in train mode"
            + (" (its BatchNorm running statistics moved)" if moved else "")
            + ": BatchNorm uses the batch's statistics and Dropout zeroes units, so its soft "
            "targets are noisy and the teacher changes while it teaches; call teacher.eval()"
        )
    # 2. an eval teacher, stale gradients, some labels hidden: the weights after the step
    call = _run(fn, "eval", hidden=_HIDDEN)
    if call.error:
        return Diagnosis(False, problems + [call.error])
    weights = _weight_problems(call)
    problems += _teacher_problems(call) + weights
    # 3. no label in the batch: the soft term alone, no NaN from a mean over nothing
    call = _run(fn, "eval", hidden=_BATCH)
    if call.error:
        problems.append(f"with every label hidden, {call.error}")
    elif not _finite(call) and not weights:  # a wrong mask was named above already
        problems.append(
            "with every label hidden the step gave NaN: the cross-entropy over no labelled "
            "row is a mean over nothing (fit would count the run as diverged); add the hard "
            "term only when some label exists"
        )
    return Diagnosis(
        not problems, problems, "your step leaves the same weights as fit's distillation step"
    )
