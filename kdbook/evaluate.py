"""Measuring models: accuracy, agreement, calibration, latency, size, and honest comparisons.

A comparison trains the student alone and distilled from the *same* initial weights for
each seed and reports mean and 95% interval (Student's t) over seeds, plus the paired gain.

>>> mean_ci([93.0, 94.0, 95.0])
(94.0, 2.484...)
"""

from __future__ import annotations

import copy
import io
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.config import resolve_device
from kdbook.data import Dataset, Loader, Split
from kdbook.models import build_model


@torch.no_grad()
def predict(
    model: nn.Module, data: Dataset, split: Split | str = "test", device: str = "cpu"
) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) on a split, as a CPU float tensor ``(N, C)``."""
    split = getattr(data, split) if isinstance(split, str) else split
    dev = torch.device(resolve_device(device))
    was_training = model.training
    model.to(dev).eval()
    out = [model(x).float().cpu() for x, _, _ in Loader(data, split, 512, device=dev)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def per_class_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]
) -> pd.Series:
    """Accuracy (%) per true class, indexed by class name."""
    pred = logits.argmax(1)
    return pd.Series(
        [100.0 * (pred[labels == c] == c).float().mean().item() for c in range(len(classes))],
        index=list(classes),
        name="accuracy (%)",
    )


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(true, predicted)`` as a ``(C, C)`` int64 tensor."""
    index = labels * num_classes + logits.argmax(1)
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Share (%) of samples where student and teacher predict the same class."""
    return 100.0 * (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


def calibration_bins(
    logits: torch.Tensor, labels: torch.Tensor, num_bins: int = 10
) -> pd.DataFrame:
    """Per confidence bin: count, mean confidence and accuracy (for a reliability diagram)."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, num_bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        n = int(inside.sum())
        rows.append(
            {
                "low": lo.item(),
                "high": hi.item(),
                "count": n,
                "confidence": conf[inside].mean().item() if n else math.nan,
                "accuracy": correct[inside].mean().item() if n else math.nan,
            }
        )
    return pd.DataFrame(rows)


def ece(logits: torch.Tensor, labels: torch.Tensor, num_bins: int = 10) -> float:
    """Expected calibration error (%): bin-weighted |accuracy - confidence| (Guo et al. 2017)."""
    bins = calibration_bins(logits, labels, num_bins)
    filled = bins[bins["count"] > 0]
    gap = (filled["accuracy"] - filled["confidence"]).abs()
    return 100.0 * float((gap * filled["count"]).sum() / len(labels))


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str = "cpu",
    *,
    warmup: int = 10,
    repeats: int = 50,
) -> float:
    """Median milliseconds per forward pass of a batch of ``input_shape``, measured correctly.

    Warm-up passes first (allocator, kernels), inference under ``torch.inference_mode``,
    ``torch.cuda.synchronize()`` around each timed call on a GPU (CUDA runs asynchronously),
    no data loading inside the timed region, the median of ``repeats`` calls.
    """
    dev = torch.device(resolve_device(device))
    model = copy.deepcopy(model).to(dev).eval()
    x = torch.randn(input_shape, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def size_kb(model: nn.Module) -> float:
    """Size of the model's saved state_dict, in kilobytes (what a checkpoint costs on disk)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1024


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``confidence`` interval (Student's t over len(values) - 1).

    With one value the half-width is NaN: one seed says nothing about the spread.
    """
    from scipy.stats import t

    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one number, got []")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


def first_layer_norm(model: nn.Module) -> float:
    """Norm of the first weight tensor: equal numbers show two models start alike."""
    return next(p for p in model.parameters() if p.dim() > 1).norm().item()


@dataclass
class Comparison:
    """Result of :func:`compare`: a row per seed, and the mean/95% interval table."""

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    setting: str

    def row(self) -> dict[str, float | int | str]:
        """One flat row for results.json ("comparisons")."""
        s = self.summary
        return {
            "setting": self.setting,
            "num_seeds": int(s.loc["student (scratch)", "n"]),
            "scratch_mean": s.loc["student (scratch)", "mean"],
            "scratch_ci95": s.loc["student (scratch)", "ci95"],
            "kd_mean": s.loc["student (KD)", "mean"],
            "kd_ci95": s.loc["student (KD)", "ci95"],
            "gain_mean": s.loc["gain (KD - scratch)", "mean"],
            "gain_ci95": s.loc["gain (KD - scratch)", "ci95"],
        }

    def seed_rows(self) -> list[dict[str, float | int | str]]:
        """One flat row per seed (test accuracies, percent), for results and sweep tables."""
        return [
            {
                "setting": self.setting,
                "seed": int(seed),
                "scratch_test_accuracy": row["student (scratch)"],
                "kd_test_accuracy": row["student (KD)"],
                "gain": row["gain (KD - scratch)"],
            }
            for seed, row in self.per_seed.iterrows()
        ]

    def verdict(self) -> str:
        """Plain words for the gain: helps, inside seed noise, or hurts."""
        from kdbook.book import verdict  # the one rule, shared with summary.md

        gain, ci = self.summary.loc["gain (KD - scratch)", ["mean", "ci95"]]
        if math.isnan(ci):
            return f"one seed, no interval: gain {gain:+.1f} points (run more seeds to judge)"
        word = verdict(gain, ci)
        relation = "includes" if word == "inside seed noise" else "excludes"
        return f"{word}: gain {gain:+.1f} ± {ci:.1f} points {relation} 0"


def summarize(per_seed: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean, 95% interval and n over seeds for each of ``columns``."""
    rows = {}
    for col in columns:
        mean, ci = mean_ci(per_seed[col].tolist())
        rows[col] = {"mean": mean, "ci95": ci, "n": len(per_seed)}
    return pd.DataFrame(rows).T.astype({"n": int})


def compare(
    student: str,
    teacher: nn.Module,
    data: Dataset,
    *,
    seeds: Sequence[int],
    setting: str = "all labels",
    progress: bool = True,
    **fit_kwargs,
) -> Comparison:
    """Train ``student`` alone and distilled from ``teacher``, from the same weights per seed.

    For each seed: seed the RNG, build the student once, copy it twice, train one copy
    with cross-entropy and the other with the KD loss, and measure both on the test split.

    Args:
        student: a registered model name.
        teacher: the trained teacher.
        data: the data set (with hidden labels for a scarce-label setting).
        seeds: one run per seed.
        setting: a label for the table ("all labels", "5% labels", ...).
        **fit_kwargs: passed to :func:`kdbook.train.fit` (num_epochs, lr, temperature...).

    Returns:
        A :class:`Comparison` with test accuracy (%) per seed and its summary.
    """
    from kdbook.train import fit

    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    fit_kwargs.setdefault("progress", False)
    rows = []
    for seed in tqdm(seeds, desc=f"{setting}: seeds", disable=not progress):
        torch.manual_seed(seed)
        init = build_model(
            student, data.num_classes, in_channels=data.in_channels, image_size=data.image_size
        )
        scratch, distilled = copy.deepcopy(init), copy.deepcopy(init)
        fit(scratch, data, seed=seed, **fit_kwargs)
        fit(distilled, data, teacher=teacher, seed=seed, **fit_kwargs)
        device = fit_kwargs.get("device", "cpu")
        acc_scratch = accuracy(predict(scratch, data, "test", device), data.test.labels)
        acc_kd = accuracy(predict(distilled, data, "test", device), data.test.labels)
        rows.append(
            {
                "seed": seed,
                "init_norm": first_layer_norm(init),
                "student (scratch)": acc_scratch,
                "student (KD)": acc_kd,
                "gain (KD - scratch)": acc_kd - acc_scratch,
            }
        )
    per_seed = pd.DataFrame(rows).set_index("seed")
    summary = summarize(per_seed, ["student (scratch)", "student (KD)", "gain (KD - scratch)"])
    return Comparison(per_seed, summary, setting)


SCRATCH = "student (scratch)"


@dataclass
class MethodComparison:
    """Result of :func:`compare_methods`: per-seed accuracies and times, and the summary."""

    per_seed: pd.DataFrame
    summary: pd.DataFrame


def compare_methods(
    student: str,
    data: Dataset,
    methods: dict[str, dict],
    *,
    seeds: Sequence[int],
    baseline: str | None = None,
    progress: bool = True,
    **fit_kwargs,
) -> MethodComparison:
    """Train ``student`` alone and with each distillation method, from the same weights per seed.

    For each seed the student is built once; the scratch copy and one copy per method train
    from those weights with :func:`kdbook.train.fit`. A method is a dict of extra ``fit``
    arguments, e.g. ``{"teacher": t}`` or ``{"teacher": t, "feature_loss": HintLoss(...),
    "feature_weight": 1.0}``. A ``feature_loss`` given as a class or factory (not a module)
    is called once per seed, so that every run gets a fresh adapter. A method's own
    arguments override the shared ``fit_kwargs`` (e.g. its own ``alpha``).

    Returns:
        A :class:`MethodComparison`. ``summary`` has, per method: test accuracy mean and 95%
        interval, the paired gain over scratch and over ``baseline`` (e.g. plain logit KD),
        and the mean seconds per epoch with its ratio to scratch (the extra training cost).
    """
    from kdbook.train import fit

    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    if baseline is not None and baseline not in methods:
        raise ValueError(f"baseline must be one of {list(methods)}, got {baseline!r}")
    fit_kwargs.setdefault("progress", False)
    device = fit_kwargs.get("device", "cpu")
    rows = []
    bar = tqdm(total=len(seeds) * (len(methods) + 1), desc="runs", disable=not progress)
    for seed in seeds:
        torch.manual_seed(seed)
        init = build_model(
            student, data.num_classes, in_channels=data.in_channels, image_size=data.image_size
        )
        row: dict = {"seed": seed, "init_norm": first_layer_norm(init)}
        for name, extra in {SCRATCH: {}, **methods}.items():
            extra = dict(extra)
            loss = extra.get("feature_loss")
            if loss is not None and not isinstance(loss, nn.Module):
                extra["feature_loss"] = loss()  # a fresh adapter for this seed
            model = copy.deepcopy(init)
            history = fit(model, data, seed=seed, **{**fit_kwargs, **extra})  # method wins
            row[name] = accuracy(predict(model, data, "test", device), data.test.labels)
            row[f"{name} s/epoch"] = statistics.fmean(e["seconds"] for e in history.epochs)
            bar.update()
        rows.append(row)
    bar.close()
    per_seed = pd.DataFrame(rows).set_index("seed")
    summary = []
    for name in [SCRATCH, *methods]:
        acc, acc_ci = mean_ci(per_seed[name].tolist())
        gain, gain_ci = mean_ci((per_seed[name] - per_seed[SCRATCH]).tolist())
        entry = {
            "method": name,
            "accuracy": acc,
            "accuracy_ci95": acc_ci,
            "gain_vs_scratch": gain,
            "gain_vs_scratch_ci95": gain_ci,
        }
        if baseline is not None:
            vs, vs_ci = mean_ci((per_seed[name] - per_seed[baseline]).tolist())
            entry |= {f"gain_vs_{baseline}": vs, f"gain_vs_{baseline}_ci95": vs_ci}
        seconds = per_seed[f"{name} s/epoch"].mean()
        entry |= {
            "s_per_epoch": seconds,
            "time_ratio_vs_scratch": seconds / per_seed[f"{SCRATCH} s/epoch"].mean(),
        }
        summary.append(entry)
    return MethodComparison(per_seed, pd.DataFrame(summary).set_index("method"))


ONNX_INPUT, ONNX_OUTPUT = "images", "logits"  # tensor names in exported ONNX files


def export_onnx(
    model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *, opset_version: int = 18
) -> Path:
    """Export ``model`` (in eval mode, on the CPU) to an ONNX file with a dynamic batch axis.

    Uses torch's default exporter, ``torch.onnx.export(..., dynamo=True)`` (torch.export
    plus onnxscript); the legacy TorchScript exporter (``dynamo=False``) is deprecated.
    The input is named ``images`` and the output ``logits``; their first axis is ``batch``,
    so the file runs on any batch size. The model itself is not changed (a copy is exported),
    and the file is written atomically in one piece (no external data file).

    Args:
        model: the network to export.
        path: the ``.onnx`` file to write.
        input_shape: the shape of one input batch, ``(N, C, H, W)``; only ``C, H, W`` are
            fixed in the file.
        opset_version: the ONNX operator set.

    Returns:
        The path written.

    >>> from kdbook.models import build_model
    >>> import tempfile
    >>> net = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
    >>> export_onnx(net, Path(tempfile.mkdtemp()) / "tiny.onnx", (1, 1, 8, 8)).name
    'tiny.onnx'
    """
    from kdbook.io import atomic_write

    if len(input_shape) < 2 or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise ValueError(f"input_shape must be (N, C, ...) of integers >= 1, got {input_shape!r}")
    model = copy.deepcopy(model).cpu().eval()
    # torch.export specialises a dimension of size 1: trace with a batch of 2 at least.
    example = torch.randn((max(2, input_shape[0]), *input_shape[1:]))
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset_version,
        external_data=False,
        verbose=False,
    )
    blob = program.model_proto.SerializeToString()
    return atomic_write(path, lambda f: f.write(blob))


@dataclass
class OnnxCheck:
    """Result of :func:`check_onnx`: agreement with PyTorch and the latency of both."""

    batch: int
    max_abs_diff: float
    torch_ms: float
    onnx_ms: float
    threads: int

    def row(self) -> dict[str, float | int]:
        """One flat row for a results table."""
        return dict(vars(self))


def check_onnx(
    model: nn.Module, path: str | Path, batch: int, *, warmup: int = 10, repeats: int = 50
) -> OnnxCheck:
    """Run an exported model in onnxruntime and compare it with PyTorch on one random batch.

    onnxruntime runs on its ``CPUExecutionProvider`` with as many threads as PyTorch uses
    (``torch.get_num_threads()``), so that the two latencies compare like with like. Both
    are measured the same way: warm-up calls first, then the median of ``repeats`` calls
    timed with ``time.perf_counter``, the input already in memory (PyTorch's by
    :func:`latency_ms`).

    Args:
        model: the PyTorch model the file was exported from.
        path: the ``.onnx`` file (from :func:`export_onnx`).
        batch: the batch size to run, any size (the batch axis is dynamic).

    Returns:
        An :class:`OnnxCheck`: max absolute difference of the logits, and milliseconds per
        batch for PyTorch and onnxruntime.
    """
    import onnxruntime as ort

    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist (write it with export_onnx)")
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feature_shape = tuple(session.get_inputs()[0].shape[1:])
    x = torch.randn((batch, *feature_shape))
    feed = {session.get_inputs()[0].name: x.numpy()}
    reference = copy.deepcopy(model).cpu().eval()
    with torch.inference_mode():
        expected = reference(x).numpy()
    got = session.run(None, feed)[0]
    if got.shape != expected.shape:
        raise ValueError(f"ONNX file {path} outputs shape {got.shape}, the model {expected.shape}")
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    return OnnxCheck(
        batch=batch,
        max_abs_diff=float(abs(got - expected).max()),
        torch_ms=latency_ms(reference, x.shape, "cpu", warmup=warmup, repeats=repeats),
        onnx_ms=statistics.median(times),
        threads=threads,
    )
