"""The doctor's checks of a reader's statistics and of a teacher in training: ``mean_ci``,
ECE, a frozen teacher, eval mode, no autograd graph (notebooks 06 and 08).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import torch

from kdbook.doctor.diagnosis import Diagnosis
from kdbook.doctor.losses import PROBE_CLASSES


def check_mean_ci(values: Sequence[float], mean: float | None, ci95: float | None) -> Diagnosis:
    """Check a mean and 95% half-width computed by hand from ``values`` (e.g. per-seed gains).

    The right interval is Student's t: ``mean ± t(0.975, n - 1) * sd / sqrt(n)`` with the
    sample standard deviation (``ddof=1``), as :func:`kdbook.compare.mean_ci` computes.
    With 5 seeds t is about 2.78, not 1.96: few runs make a wider interval.

    Args:
        values: the numbers the interval summarises (at least two).
        mean, ci95: the reader's answer; ``None`` means not answered yet.

    Returns:
        A :class:`Diagnosis` naming the usual mistakes (1.96 instead of t, population sd,
        standard deviation or standard error instead of the half-width).
    """
    from scipy.stats import t as student_t

    from kdbook.stats import mean_ci

    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"values must hold at least two numbers, got {values!r}")
    if mean is None or ci95 is None:
        return Diagnosis(False, ["not answered yet: set both the mean and the half-width"])
    right_mean, right_ci = mean_ci(values)
    n = len(values)
    sd = statistics.stdev(values)
    quantile = float(student_t.ppf(0.975, n - 1))
    problems = []
    if not math.isclose(mean, right_mean, rel_tol=1e-3, abs_tol=1e-6):
        problems.append(
            f"the mean is {right_mean:.4g}, not {mean:.4g}: sum the values, divide by n"
        )
    if not math.isclose(ci95, right_ci, rel_tol=1e-3, abs_tol=1e-6):
        wrong = {
            "1.96 (a normal quantile) stands where Student's t quantile with n - 1 = "
            f"{n - 1} degrees of freedom ({quantile:.3f}) belongs: with few seeds "
            "the interval is wider": 1.96 * sd / math.sqrt(n),
            "the standard deviation was not divided by sqrt(n): the interval is for the "
            "mean, so it uses the standard error sd / sqrt(n)": quantile * sd,
            "the population standard deviation (ddof=0, numpy's default) was used: use "
            "the sample one (ddof=1, statistics.stdev)": quantile
            * statistics.pstdev(values)
            / math.sqrt(n),
            "that is the standard deviation, not the interval's half-width t * sd / sqrt(n)": sd,
            f"that is the standard error; multiply it by t ({quantile:.3f})": sd / math.sqrt(n),
        }
        named = [why for why, v in wrong.items() if math.isclose(ci95, v, rel_tol=1e-3)]
        problems.append(
            named[0]
            if named
            else f"the half-width is {right_ci:.4g}, not {ci95:.4g}: t(0.975, n-1) * sd / sqrt(n)"
        )
    return Diagnosis(not problems, problems)


ECEFn = Callable[..., float]


def check_ece(fn: ECEFn, *, num_bins: int = 10) -> Diagnosis:
    """Check a reader's ``fn(logits, labels, num_bins)`` against :func:`kdbook.evaluate.ece`.

    ECE (Guo et al. 2017) in percent: split the test samples by confidence (max softmax
    probability) into ``num_bins`` equal-width bins over (0, 1], and average
    ``|accuracy - confidence|`` over the bins weighted by the share of samples in each.

    Returns:
        A :class:`Diagnosis` naming a fraction returned for a percentage, an unweighted
        mean over bins, or a signed gap without the absolute value.
    """
    from kdbook.evaluate import calibration_bins, ece

    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(200, PROBE_CLASSES, generator=g)
    labels = torch.where(
        torch.rand(200, generator=g) < 0.6,
        logits.argmax(1),
        torch.randint(0, PROBE_CLASSES, (200,), generator=g),
    )
    try:
        value = float(fn(logits, labels, num_bins))
    except Exception as e:  # the reader's code may raise anything: report it
        return Diagnosis(False, [f"calling it raised {type(e).__name__}: {e}"])
    right = ece(logits, labels, num_bins)
    if math.isclose(value, right, rel_tol=1e-4, abs_tol=1e-6):
        return Diagnosis(True)
    bins = calibration_bins(logits, labels, num_bins)
    filled = bins[bins["count"] > 0]
    gap = filled["accuracy"] - filled["confidence"]
    wrong = {
        "it returns a fraction; the book reports ECE in percent (multiply by 100)": right / 100,
        "the bins are averaged with equal weights; weight each bin by its share of the "
        "samples": 100.0 * float(gap.abs().mean()),
        "the gaps are signed, so over- and under-confidence cancel: take |accuracy - "
        "confidence| per bin": 100.0 * abs(float((gap * filled["count"]).sum()) / len(labels)),
    }
    named = [why for why, v in wrong.items() if math.isclose(value, v, rel_tol=1e-4)]
    return Diagnosis(
        False, named[:1] or [f"got {value:.4g}, kdbook.evaluate.ece gives {right:.4g}"]
    )


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_teacher_frozen(model: torch.nn.Module) -> Diagnosis:
    """Check that no parameter of a teacher would be trained.

    Finds parameters that still have ``requires_grad`` (the teacher would get gradients,
    and would be updated if its parameters reached an optimizer), and the attribute
    mistake of source 4 (bug 3): ``param.requires_grad_ = False`` creates an attribute
    named ``requires_grad_`` that hides the method and freezes nothing.

    >>> from torch import nn
    >>> check_teacher_frozen(nn.Linear(2, 2).requires_grad_(False)).ok
    True

    Returns:
        A :class:`Diagnosis` counting the trainable parameters, with the fix.
    """
    named = list(model.named_parameters())
    trainable = [name for name, p in named if p.requires_grad]
    shadowed = [name for name, p in named if "requires_grad_" in vars(p)]
    problems = []
    if shadowed:
        problems.append(
            f"{len(shadowed)} parameters have an attribute named requires_grad_ "
            f"({_names(shadowed)}): `p.requires_grad_ = False` stores a value and freezes "
            "nothing (source 4's bug); call the method: p.requires_grad_(False), or "
            "teacher.requires_grad_(False) for all of them (delete the attribute first: "
            "del p.requires_grad_)"
        )
    if trainable:
        count = sum(p.numel() for _, p in named if p.requires_grad)
        problems.append(
            f"{len(trainable)} of {len(named)} parameter tensors ({count:,} weights) still "
            f"require grad ({_names(trainable)}): freeze the teacher with "
            "teacher.requires_grad_(False) and run it under torch.no_grad()"
        )
    total = sum(p.numel() for _, p in named)
    return Diagnosis(
        not problems, problems, f"all {len(named)} parameter tensors ({total:,} weights) frozen"
    )


_BATCHNORM = (torch.nn.modules.batchnorm._BatchNorm,)
_DROPOUT = (torch.nn.modules.dropout._DropoutNd, torch.nn.AlphaDropout)


def check_eval_mode(model: torch.nn.Module) -> Diagnosis:
    """Check that a teacher is in eval mode where it matters: BatchNorm and Dropout.

    In train mode BatchNorm normalises with the batch's statistics and updates its running
    statistics on every forward pass (the teacher changes while it teaches), and Dropout
    zeroes units at random (noisy targets): bug 7 of the sources.

    >>> from torch import nn
    >>> check_eval_mode(nn.Sequential(nn.Linear(2, 2), nn.Dropout()).eval()).ok
    True

    Returns:
        A :class:`Diagnosis` naming the layers in train mode, with the fix.
    """
    modules = list(model.named_modules())
    training = [(name or "(model)", m) for name, m in modules if m.training]
    norms = [name for name, m in training if isinstance(m, _BATCHNORM)]
    drops = [name for name, m in training if isinstance(m, _DROPOUT)]
    problems = []
    if norms:
        problems.append(
            f"{len(norms)} BatchNorm layers are in train mode ({_names(norms)}): each "
            "forward pass normalises with the batch's statistics and moves running_mean and "
            "running_var; call teacher.eval()"
        )
    if drops:
        problems.append(
            f"{len(drops)} Dropout layers are in train mode ({_names(drops)}): they zero "
            "units at random, so the soft targets are noisy; call teacher.eval()"
        )
    if problems:
        return Diagnosis(False, problems)
    if training:
        return Diagnosis(
            True,
            summary=f"{len(training)} modules in train mode, none of them BatchNorm or "
            "Dropout: the outputs are the same as in eval mode (call .eval() anyway)",
        )
    return Diagnosis(True, summary=f"all {len(modules)} modules in eval mode")


def batchnorm_running_means(model: torch.nn.Module) -> torch.Tensor:
    """Every BatchNorm layer's ``running_mean``, as one flat copy.

    Compare it before and after a forward pass: a model left in train mode moves it even
    under ``torch.no_grad()`` (what :func:`check_eval_mode` warns about).
    """
    means = [m.running_mean for m in model.modules() if isinstance(m, _BATCHNORM)]
    if not means:
        raise ValueError(f"model {type(model).__name__} has no BatchNorm layer")
    return torch.cat([m.detach().flatten() for m in means])


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of activations autograd keeps for a backward pass while ``fn()`` runs.

    Counts each distinct storage saved through ``torch.autograd.graph.saved_tensors_hooks``,
    leaving out the parameters (leaves that require grad: they are in memory anyway).
    Under ``torch.no_grad()`` nothing is saved, so it returns 0.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not (t.is_leaf and t.requires_grad):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def check_no_grad(teacher_forward: Callable[[], object]) -> Diagnosis:
    """Run ``teacher_forward()`` (e.g. ``lambda: teacher(x).detach()``) and look at autograd.

    A teacher's forward pass run without ``torch.no_grad()`` records a graph and keeps
    every activation for a backward pass that never comes; ``.detach()`` afterwards gives
    the right values but saves nothing (source 3, bug 4). Returns a problem when the call
    saved tensors for backward or returned a tensor that carries a graph.
    """
    outputs: list[object] = []
    saved = saved_bytes(lambda: outputs.append(teacher_forward()))
    out = outputs[0]
    problems = []
    if saved:
        problems.append(
            f"the teacher's forward pass kept {saved / 1024:,.1f} KiB of activations for a "
            "backward pass that never comes (and spent time recording the graph): run it "
            "inside `with torch.no_grad():` (a .detach() afterwards does not undo this)"
        )
    if isinstance(out, torch.Tensor) and out.requires_grad:
        problems.append(
            "the teacher's output requires grad: the loss would send gradients into the "
            "teacher; compute it under torch.no_grad() (or .detach() it)"
        )
    return Diagnosis(not problems, problems, "no graph recorded, nothing saved for backward")
