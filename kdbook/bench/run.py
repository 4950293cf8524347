"""X"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbook.bench.data import SMOKE_STEPS, SMOKE_WARMUP, bench_data, check_preset, seed_style_loader
from kdbook.bench.lm import lm_paths
from kdbook.bench.result import (
    CACHED,
    KDBOOK,
    PROC_STATUS,
    SEED_STYLE,
    TEACHER_ALONE,
    BenchResult,
    PathResult,
    PeakMemory,
    maxrss_kb,
)
from kdbook.config import PRESETS, resolve_device
from kdbook.data import Dataset, Loader
from kdbook.distill import Distiller, cache_teacher_logits
from kdbook.io import write_json
from kdbook.models import build_model
from kdbook.runtime import Runtime, choose_threads

DEFAULT_STEPS, DEFAULT_WARMUP, DEFAULT_REPEATS = 100, 5, 3
TEMPERATURE, ALPHA = 4.0, 0.7  # source 1's
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # images, labels, indices


def _timed(
    batches: Iterator[Batch],
    student: nn.Module,
    distiller: Distiller,
    data: Dataset,
    lr: float,
    steps: int,
    warmup: int,
    runtime: Runtime,
) -> tuple[int, float, list[float]]:
    """Train ``warmup`` untimed steps then ``steps`` timed ones; images, seconds, losses.

    Each step is :meth:`kdbook.runtime.Runtime.step` with ``distiller``'s loss: the step
    :func:`kdbook.train.fit` runs (its GradScaler under fp16 included).
    """
    runtime.prepare(student)
    module = distiller.student(student, data, runtime, seed=0)
    opt = runtime.optimizer(list(module.parameters()), "sgd", lr, 5e-4, 0.9)
    module.train()

    def step(batch: Batch) -> float:
        result = runtime.step(
            module, lambda x, y, i: distiller.loss(module, x, y, i, 0.0), batch, opt
        )
        return result.loss / result.seen

    sync = torch.cuda.synchronize if runtime.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step(next(batches))
    sync()
    images, losses = 0, []
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)  # fetching the batch is part of a step's cost
        losses.append(step(batch))
        images += len(batch[1])
    sync()
    seconds = time.perf_counter() - start
    return images, seconds, losses


def _seed_style_batches(loader: torch.utils.data.DataLoader, device: torch.device):
    while True:  # epochs, as the sources loop them: the workers restart each epoch
        for x, y in loader:
            yield x.to(device), y.to(device), None


def _kdbook_batches(loader: Loader):
    while True:
        yield from loader


def run_bench(
    preset: str = "classroom",
    *,
    device: str | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    batch_size: int = 128,
    num_workers: int = 2,
    augment: bool = True,
    synthetic: bool = False,
    smoke: bool = False,
    threads: int | None = None,
    seed: int = 0,
    data: Dataset | None = None,
) -> BenchResult:
    """Time the seed-style loop, kdbook's path and kdbook's path with cached teacher logits.

    Args:
        preset: ``"classroom"`` (digits, ``digits_teacher`` -> ``tiny_cnn``) or
            ``"cifar10"`` (``resnet18_cifar`` -> ``simple_resnet``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...; default: the preset's.
        steps: timed steps per path and round (default 100, smoke 3).
        warmup: untimed steps before them (default 5, smoke 1).
        repeats: rounds; the paths take turns, and each reports its median round
            (default 3, smoke 1).
        batch_size: images per step in every path (the sources' 128).
        num_workers: the seed-style DataLoader's worker processes (the sources' 2).
        augment: the data set's augmentation in the first two paths; the cached path never
            augments, so it is valid (the same recipe) only when this is False.
        synthetic: with ``cifar10``, random CIFAR-shaped images instead of the real files.
        smoke: a few steps only (CI): checks that the bench runs, measures nothing.
        threads: torch intra-op threads during the run (default: what ``fit`` would choose
            for the preset's models, :func:`kdbook.runtime.choose_threads`).
        seed: seeds the models' initial weights and the shuffling.
        data: a data set to use instead of the preset's (its models stay the preset's).

    Returns:
        A :class:`BenchResult`; ``print(result.table())`` shows it.
    """
    check_preset(preset)
    steps = steps if steps is not None else SMOKE_STEPS if smoke else DEFAULT_STEPS
    warmup = warmup if warmup is not None else SMOKE_WARMUP if smoke else DEFAULT_WARMUP
    repeats = repeats if repeats is not None else 1 if smoke else DEFAULT_REPEATS
    for name, value, least in (
        ("steps", steps, 1),
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    dev = torch.device(resolve_device(device or PRESETS[preset]["device"]))
    if data is None:
        data = bench_data(preset, synthetic=synthetic, smoke=smoke)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(
            preset,
            data,
            dev,
            steps,
            warmup,
            repeats,
            batch_size,
            num_workers,
            augment,
            seed,
            auto_threads=threads is None,
        )
    finally:
        torch.set_num_threads(before)


def _run(
    preset: str,
    data: Dataset,
    dev: torch.device,
    steps: int,
    warmup: int,
    repeats: int,
    batch_size: int,
    num_workers: int,
    augment: bool,
    seed: int,
    auto_threads: bool = False,
) -> BenchResult:
    baseline = PeakMemory.baseline(dev)
    torch.manual_seed(seed)
    shape = {"in_channels": data.in_channels, "image_size": data.image_size}
    teacher = build_model(PRESETS[preset]["teacher"], data.num_classes, **shape).to(dev).eval()
    initial = build_model(PRESETS[preset]["student"], data.num_classes, **shape)
    if auto_threads and dev.type == "cpu":  # the threads fit trains them with (threads='auto')
        choose_threads(initial, teacher, data=data, batch_size=batch_size)
    lr = PRESETS[preset]["lr"]

    seed_style, fast = Runtime(dev), Runtime.create(dev)  # the sources' fp32; fit's

    def measure(
        path: PathResult,
        batches: Iterator[Batch],
        runtime: Runtime,
        distiller: Distiller,
        model: nn.Module = initial,
    ) -> None:
        student = copy.deepcopy(model).to(dev)
        try:
            with PeakMemory(dev, baseline) as peak:
                images, seconds, losses = _timed(
                    batches, student, distiller, data, lr, steps, warmup, runtime
                )
        finally:
            batches.close()  # stops the seed-style loader's worker processes now
        path.add_round(images, seconds, losses, peak)

    def kdbook_loader(augmented: bool) -> Loader:
        return Loader(
            data, data.train, batch_size, shuffle=True, augment=augmented, device=dev, seed=seed
        )

    distilled = Distiller(teacher, temperature=TEMPERATURE, alpha=ALPHA)
    # the sources' teacher in its own copy: fit's path may turn its teacher channels_last
    seed_teacher = Distiller(copy.deepcopy(teacher), temperature=TEMPERATURE, alpha=ALPHA)
    # Warm the process up once (kernel selection, allocator) with a throwaway student, so
    # that the first path measured does not pay for what the others then get for free.
    warm_student = copy.deepcopy(initial).to(dev)
    warm = _kdbook_batches(kdbook_loader(False))
    _timed(warm, warm_student, distilled, data, lr, 1, warmup, fast)
    del warm_student

    from_cache, cache_seconds, note = _cached_path(teacher, data, dev, augment, seed)
    seed_loader = seed_style_loader(data, batch_size, num_workers=num_workers, augment=augment)
    results = [PathResult(SEED_STYLE, True), PathResult(KDBOOK, True)]
    results.append(PathResult(CACHED, True, note))
    teacher_alone = PathResult(
        TEACHER_ALONE,
        False,
        "the teacher trained alone (cross-entropy) on kdbook's path: the teacher's "
        "training throughput, not a distillation path (no ratio)",
    )
    for _ in range(repeats):  # the paths take turns, so that a burst of load hits them alike
        torch.manual_seed(seed)  # the DataLoader's shuffling and its transforms draw from it
        measure(results[0], _seed_style_batches(seed_loader, dev), seed_style, seed_teacher)
        measure(results[1], _kdbook_batches(kdbook_loader(augment)), fast, distilled)
        cached = kdbook_loader(False)
        from_cache.start_epoch(1, cached)  # replays the stored view (when augmenting)
        measure(results[2], _kdbook_batches(cached), fast, from_cache)
        alone = Distiller(None)  # the teacher trained alone: cross-entropy
        measure(teacher_alone, _kdbook_batches(kdbook_loader(augment)), fast, alone, teacher)

    base = results[0].images_per_s
    for r in results:
        r.ratio = r.images_per_s / base
    settings = _settings(preset, data, dev, augment, seed_style, fast)
    settings |= {"batch_size": batch_size, "steps": steps, "warmup": warmup}
    settings |= {"repeats": repeats, "num_workers": num_workers}
    settings["cache_views"] = 0 if from_cache.source.cache.views is None else 1
    settings["cache_seconds"] = cache_seconds
    lm, lm_settings = lm_paths(preset, dev, steps, warmup, repeats, seed)
    return BenchResult(settings | lm_settings, results, teacher_alone, lm)


def _cached_path(
    teacher: nn.Module, data: Dataset, dev: torch.device, augment: bool, seed: int
) -> tuple[Distiller, float, str]:
    """The teacher's logits cached once: its distiller, the seconds it took and a note.

    With augmentation the cache holds one stored view of every image, replayed to the
    student: valid (the student sees what the teacher saw).
    """
    views = 1 if augment else 0
    start = time.perf_counter()
    cache = cache_teacher_logits(
        teacher, data, views=views, seed=seed, device=str(dev), progress=False
    )
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    note = f"teacher logits cached once in {seconds:.2f} s (not in the timing); valid: "
    if augment:
        note += (
            "the student is shown the stored augmented view the teacher's logits were "
            "computed on (fit replays view e mod k of k stored views in epoch e)"
        )
    else:
        note += "without augmentation the student sees exactly what the teacher saw"
    return Distiller(cache, temperature=TEMPERATURE, alpha=ALPHA), seconds, note


def _settings(
    preset: str,
    data: Dataset,
    dev: torch.device,
    augment: bool,
    seed_style: Runtime,
    fast: Runtime,
) -> dict[str, Any]:
    """What a bench result records about its data, models, steps and machine."""
    return {
        "preset": preset,
        "dataset": data.name,
        "synthetic": data.name.startswith("synthetic"),
        "train_samples": len(data.train),
        "image_shape": list(data.train.images.shape[1:]),
        "teacher": PRESETS[preset]["teacher"],
        "student": PRESETS[preset]["student"],
        "augment": augment,
        "seed_style_step": seed_style.describe(),
        "kdbook_step": fast.describe(),
        "device": str(dev),
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
        "torch": torch.__version__,
        "memory_note": _memory_note(dev),
    }


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _memory_note(dev: torch.device) -> str:
    if dev.type == "cuda":
        return (
            "peak GPU memory allocated during the path (torch.cuda.max_memory_allocated) "
            "above what was allocated before the bench"
        )
    if PROC_STATUS.exists():
        return (
            "peak resident memory of this process during the path (VmHWM) above its size "
            "before the bench (the seed-style loader's worker processes not counted)"
        )
    if maxrss_kb() is None:
        return "host memory is not measured on this system"
    return "this process's lifetime peak resident memory (getrusage: cannot be reset per path)"


def save_bench(result: BenchResult, path: str | Path) -> Path:
    """Write ``result`` as JSON (atomically)."""
    return write_json(path, result.to_dict())
