"""Measuring models: accuracy, per-class accuracy, confusion, agreement, calibration,
latency and size.

Comparisons over seeds live in :mod:`kdbook.compare`, ONNX export in :mod:`kdbook.deploy`.

>>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
>>> round(accuracy(logits, torch.tensor([0, 1, 1])), 2)
66.67
"""

from __future__ import annotations

import copy
import io
import math
import statistics
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from kdbook.config import resolve_device
from kdbook.data import Dataset, Loader, Split


@torch.no_grad()
def predict(
    model: nn.Module, data: Dataset, split: Split | str = "test", device: str = "cpu"
) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) on a split, as a CPU float tensor ``(N, C)``.

    Introduced in notebook 02_teacher.
    """
    split = getattr(data, split) if isinstance(split, str) else split
    dev = torch.device(resolve_device(device))
    was_training = model.training
    model.to(dev).eval()
    out = [model(x).float().cpu() for x, _, _ in Loader(data, split, 512, device=dev)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent.

    Introduced in notebook 01_data.
    """
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


def with_class_bias(logits: torch.Tensor, cls: int, bias: float) -> torch.Tensor:
    """``logits`` with ``bias`` added to class ``cls``'s column (Hinton et al.'s fix, §3).

    Introduced in notebook 13_dark_knowledge_and_dkd.
    """
    if not 0 <= cls < logits.shape[-1]:
        raise ValueError(f"cls must be a class index in [0, {logits.shape[-1]}), got {cls!r}")
    shifted = logits.clone()
    shifted[:, cls] += bias
    return shifted


def best_class_bias(
    logits: torch.Tensor, labels: torch.Tensor, cls: int, candidates: Sequence[float]
) -> float:
    """The bias for class ``cls``'s logit, among ``candidates``, with the best accuracy.

    Introduced in notebook 13_dark_knowledge_and_dkd.

    Choose it on the validation split, then apply it to the test logits
    (:func:`with_class_bias`): Hinton et al. raised the omitted digit's bias by hand on the
    test set. Ties go to the candidate nearest 0 (the smallest change).

    >>> logits = torch.tensor([[2.0, 1.0], [2.0, 1.5]])
    >>> best_class_bias(logits, torch.tensor([0, 1]), 1, [0.0, 0.75, 2.0])
    0.75
    """
    if not candidates:
        raise ValueError("candidates must hold at least one bias, got []")
    scores = [(accuracy(with_class_bias(logits, cls, b), labels), -abs(b), b) for b in candidates]
    return float(max(scores)[2])


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


def median_ms(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    repeats: int = 50,
    sync: Callable[[], None] | None = None,
) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after every call, so that the
    clock stops when asynchronous work is done, not when it is queued.
    """
    for name, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if not (isinstance(value, int) and value >= least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    sync = sync or (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


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
    no data loading inside the timed region, the median of ``repeats`` calls
    (:func:`median_ms`).
    """
    dev = torch.device(resolve_device(device))
    model = copy.deepcopy(model).to(dev).eval()
    x = torch.randn(input_shape, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    with torch.inference_mode():
        return median_ms(lambda: model(x), warmup=warmup, repeats=repeats, sync=sync)


def size_kb(model: nn.Module) -> float:
    """Size of the model's saved state_dict, in kilobytes (what a checkpoint costs on disk)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1024


def model_costs(
    model: nn.Module,
    image_shape: tuple[int, ...],
    device: str = "cpu",
    *,
    batch_sizes: Sequence[int] = (1,),
) -> dict[str, float | int]:
    """What running ``model`` costs: parameters, FLOPs per image, latency, size on disk.

    Args:
        model: the network (left as it is: FLOPs are counted on a CPU copy).
        image_shape: one input image, ``(C, H, W)``.
        device: where the latency is measured (:func:`latency_ms`).
        batch_sizes: a latency per batch size (1: one request; larger: throughput).

    Returns:
        ``{"params", "FLOPs", "latency batch <b> (ms)" for each b, "size (KB)"}``.
    """
    from kdbook.models import count_params, flops

    if not (len(image_shape) >= 1 and all(isinstance(d, int) and d >= 1 for d in image_shape)):
        raise ValueError(f"image_shape must be (C, H, W) of integers >= 1, got {image_shape!r}")
    costs: dict[str, float | int] = {
        "params": count_params(model),
        "FLOPs": flops(copy.deepcopy(model).cpu(), (1, *image_shape)),
    }
    for b in batch_sizes:
        costs[f"latency batch {b} (ms)"] = latency_ms(model, (b, *image_shape), device)
    costs["size (KB)"] = size_kb(model)
    return costs


# --- language models (notebooks 15 and 16) ------------------------------------------------

LN2 = math.log(2)


@torch.no_grad()
def lm_logits(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """A language model's logits ``[P, L, V]`` (eval mode, float32 on the CPU) on windows
    ``[P, L]`` of token ids (e.g. the inputs of :func:`kdbook.text.tiled_windows`)."""
    dev = torch.device(resolve_device(device))
    was_training = model.training
    model.to(dev).eval()
    try:
        out = [model(w.to(dev)).float().cpu() for w in windows.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def lm_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Next-token scores of logits ``[P, L, V]`` against targets ``[P, L]``: ``loss`` (mean
    cross-entropy, nats a token), ``bpc`` (the same in bits: bits per character for
    character tokens) and ``acc`` (% of tokens whose most likely id is the target).

    Introduced in notebook 15_language_model_kd.
    """
    flat, y = logits.flatten(0, 1).float(), targets.flatten()
    loss = torch.nn.functional.cross_entropy(flat, y).item()
    acc = 100.0 * (flat.argmax(-1) == y).float().mean().item()
    return {"loss": loss, "bpc": loss / LN2, "acc": acc}


def lm_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> dict[str, float]:
    """Teacher-student divergence of next-token distributions, in bits a token, averaged
    over every position of ``[P, L, V]`` logits at ``temperature``: ``forward``
    KL(teacher || student) (what token-level KD lowers: the student covering the teacher's
    choices) and ``reverse`` KL(student || teacher) (the student putting mass where the
    teacher puts little).

    Introduced in notebook 15_language_model_kd.
    """
    log_t = (teacher_logits.float() / temperature).log_softmax(-1).flatten(0, -2)
    log_s = (student_logits.float() / temperature).log_softmax(-1).flatten(0, -2)
    forward = (log_t.exp() * (log_t - log_s)).sum(-1).mean().item()
    reverse = (log_s.exp() * (log_s - log_t)).sum(-1).mean().item()
    return {"forward": forward / LN2, "reverse": reverse / LN2}
