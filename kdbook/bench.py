"""The sources' training loop and kdbook's, timed side by side in one run.

Three paths train the same student from the same initial weights with the same teacher,
loss (:func:`kdbook.losses.kd_loss`), optimizer and batch size on the same data:

- ``seed-style``: what the sources write. A torchvision ``DataLoader`` (2 workers) over a
  ``Dataset`` that turns each uint8 sample into a PIL image and applies per-sample
  transforms (``RandomCrop`` with padding, ``RandomHorizontalFlip`` where the data set
  flips, ``ToTensor``, ``Normalize``); fp32; the teacher's forward pass every step (in eval
  mode under ``no_grad``, as source 1 does: source 3's missing ``no_grad``, bug 4, would
  make this path slower still).
- ``kdbook``: :func:`kdbook.train.fit`'s path. :class:`kdbook.data.Loader` with the
  tensors prepared once (resident on the device as uint8), the same augmentation done on
  the whole batch; on a GPU bf16 autocast, channels_last and the fused optimizer (on a CPU
  fp32, as fit's ``precision="auto"``); the teacher's forward pass every step.
- ``kdbook + cached logits``: the same, with the teacher's logits computed once per
  training sample (:func:`kdbook.distill.cache_teacher_logits`) and looked up by the Loader's
  sample indices. The cache is valid because the student sees exactly the images the
  teacher saw: the plain images without augmentation, or, with augmentation, a stored
  augmented view of each image replayed to the student (one view here; ``fit`` cycles
  through k stored views, one per epoch).

A fourth line times the teacher trained alone (cross-entropy) on kdbook's path: the
teacher's training throughput (no ratio: it is not a distillation path).

The process is warmed up once before anything is timed (kernel selection, allocator).
Then, in each of ``repeats`` rounds, the paths take turns: each trains a fresh copy of the
student for ``warmup`` untimed steps (worker start-up, ...) and ``steps`` timed ones
(``time.perf_counter``, ``torch.cuda.synchronize`` on a GPU). A path reports its median
round, so that a burst of other load on a shared machine does not decide the ratio.
Model weights are random: the time of a step does not depend on them.

Over 600 lines because it carries the sources' own data path (PIL dataset, DataLoader
with workers, per-sample transforms) next to the measurement, so that the baseline is
what the sources run and not a kdbook approximation of it.

>>> result = run_bench("classroom", smoke=True)  # doctest: +SKIP
>>> print(result.table())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbook.config import PRESETS, resolve_device
from kdbook.data import Dataset, Loader, Split, load_dataset, synthetic_cifar10
from kdbook.distill import Distiller, cache_teacher_logits
from kdbook.io import write_json
from kdbook.models import build_model
from kdbook.runtime import Runtime, choose_threads

BENCH_PRESETS = ("classroom", "cifar10")
SEED_STYLE, KDBOOK, CACHED = "seed-style", "kdbook", "kdbook + cached logits"
TEACHER_ALONE = "teacher alone (kdbook)"
DEFAULT_STEPS, DEFAULT_WARMUP, DEFAULT_REPEATS = 100, 5, 3
SMOKE_STEPS, SMOKE_WARMUP, SMOKE_SYNTHETIC_SIZE = 3, 1, 512
TEMPERATURE, ALPHA = 4.0, 0.7  # source 1's
_PROC_STATUS = Path("/proc/self/status")


# --- the seed-style data path -----------------------------------------------------------


class PILDataset(torch.utils.data.Dataset):
    """uint8 ``(N, C, H, W)`` images served one by one as PIL images through ``transform``.

    This is what torchvision's ``CIFAR10`` dataset does in ``__getitem__``
    (``Image.fromarray`` on an ``H x W x C`` array, then the transforms).
    """

    def __init__(self, split: Split, transform: Callable) -> None:
        images = split.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.images = images[..., 0] if images.shape[-1] == 1 else images  # "L" or "RGB"
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def seed_style_loader(
    data: Dataset, batch_size: int = 128, *, num_workers: int = 2, augment: bool = True
) -> torch.utils.data.DataLoader:
    """The sources' training loader: per-sample PIL transforms in ``num_workers`` workers.

    Built as source 1 builds it (``shuffle=True``, no ``pin_memory``, workers started
    afresh every epoch), with the data set's own augmentation (crop padding, flip or not)
    and normalisation, so that it produces the same kind of batches as
    :class:`kdbook.data.Loader`.
    """
    from torchvision import transforms

    steps: list[Callable] = []
    if augment and data.augment.pad:
        steps.append(transforms.RandomCrop(data.image_size, padding=data.augment.pad))
    if augment and data.augment.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    dataset = PILDataset(data.train, transforms.Compose(steps))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers
    )


# --- data -----------------------------------------------------------------------------


def bench_data(preset: str, *, synthetic: bool = False, smoke: bool = False) -> Dataset:
    """The data set a bench of ``preset`` runs on.

    ``classroom`` uses the embedded digits. ``cifar10`` uses the real CIFAR-10 in ``data/``,
    or :func:`synthetic_cifar10` with ``synthetic=True`` (smaller in ``smoke`` mode).
    """
    _check_preset(preset)
    if preset == "cifar10" and synthetic:
        return synthetic_cifar10(SMOKE_SYNTHETIC_SIZE if smoke else 45000)
    if synthetic:
        raise ValueError("synthetic data is for the cifar10 preset only (classroom is embedded)")
    try:
        return load_dataset(PRESETS[preset]["dataset"])
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}; or time on CIFAR-shaped random data with --synthetic (timing needs no "
            "real images)"
        ) from None


def _check_preset(preset: str) -> None:
    if preset not in BENCH_PRESETS:
        raise ValueError(f"preset must be one of {list(BENCH_PRESETS)}, got {preset!r}")


# --- the paths ------------------------------------------------------------------------


@dataclass
class PathResult:
    """One path's measurement: a round is ``warmup`` + ``steps`` steps from fresh weights."""

    name: str
    valid: bool  # trains the same recipe as the seed-style path
    note: str = ""
    rounds: list[float] = field(default_factory=list)  # images/s of each round
    images: int = 0  # images in the timed steps, all rounds
    seconds: float = 0.0  # wall time of the timed steps, all rounds
    peak_host_mb: float | None = None  # this process's peak resident memory (VmHWM), MB
    peak_device_mb: float | None = None  # torch.cuda.max_memory_allocated, MB
    ratio: float = math.nan  # images/s over the seed-style path's
    losses: list[float] = field(default_factory=list, repr=False)  # first round, per step

    @property
    def images_per_s(self) -> float:
        """The median round's images per second (robust to a round slowed by other load)."""
        return statistics.median(self.rounds)

    def add_round(
        self, images: int, seconds: float, losses: list[float], peak: _PeakMemory
    ) -> None:
        self.rounds.append(images / seconds)
        self.images += images
        self.seconds += seconds
        self.losses = self.losses or losses
        self.peak_host_mb = _max(self.peak_host_mb, peak.host_mb)
        self.peak_device_mb = _max(self.peak_device_mb, peak.device_mb)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class BenchResult:
    """What :func:`run_bench` measured, with the settings it ran under."""

    settings: dict[str, Any]
    paths: list[PathResult]
    teacher_alone: PathResult | None = None  # the teacher's training throughput

    def path(self, name: str) -> PathResult:
        """The result of the path called ``name`` (``SEED_STYLE``, ``KDBOOK``, ``CACHED``)."""
        for p in self.paths:
            if p.name == name:
                return p
        raise KeyError(f"no path {name!r}; paths: {[p.name for p in self.paths]}")

    def to_dict(self) -> dict[str, Any]:
        """Settings and per-path numbers, JSON-ready (the per-step losses left out)."""
        rows = []
        for p in self.paths:
            row = asdict(p)
            row.pop("losses")
            row["images_per_s"] = p.images_per_s
            rows.append(row)
        teacher = None
        if self.teacher_alone is not None:
            teacher = asdict(self.teacher_alone)
            teacher.pop("losses")
            teacher["images_per_s"] = self.teacher_alone.images_per_s
        return {"settings": self.settings, "paths": rows, "teacher_alone": teacher}

    def table(self) -> str:
        """The settings and one line per path, as plain text."""
        s = self.settings
        data = s["dataset"] + (" (SYNTHETIC images: timing only)" if s["synthetic"] else "")
        lines = [
            f"kdbook bench: preset {s['preset']}, data {data}, {s['train_samples']} "
            f"training images of shape {tuple(s['image_shape'])}",
            f"teacher {s['teacher']}, student {s['student']}, batch {s['batch_size']}, "
            f"{s['repeats']} rounds of {s['steps']} timed steps after {s['warmup']} warm-up "
            f"(median round shown), augmentation "
            f"{'on' if s['augment'] else 'off'}; steps: seed-style {s['seed_style_step']}, "
            f"kdbook {s['kdbook_step']}",
            f"device {s['device']} ({s['device_name']}), torch threads {s['threads']}, "
            f"loader workers (seed-style) {s['num_workers']}, load average "
            f"{s['load_average']}",
            "",
            f"{'path':<24} {'images/s':>10} {'x seed':>7} {'peak MB':>8}  same recipe",
        ]
        for p in self.paths:
            peak = p.peak_device_mb if p.peak_device_mb is not None else p.peak_host_mb
            peak_text = "n/a" if peak is None else f"{peak:.0f}"
            same = "yes" if p.valid else "NO"
            if p.name == CACHED and s["cache_views"]:
                same += f" ({s['cache_views']} stored view per image, not a fresh one per step)"
            lines.append(
                f"{p.name:<24} {p.images_per_s:>10.0f} {p.ratio:>6.1f}x {peak_text:>8}  {same}"
            )
        t = self.teacher_alone
        if t is not None:
            peak = t.peak_device_mb if t.peak_device_mb is not None else t.peak_host_mb
            peak_text = "n/a" if peak is None else f"{peak:.0f}"
            lines.append(f"{t.name:<24} {t.images_per_s:>10.0f} {'-':>7} {peak_text:>8}  -")
        lines.append("")
        lines.append(f"peak MB: {s['memory_note']}")
        notes = [*self.paths, *([t] if t is not None else [])]
        lines += [f"{p.name}: {p.note}" for p in notes if p.note]
        return "\n".join(lines)


class _PeakMemory:
    """Peak memory during a block: on the device (GPU) and of this process (host).

    Both are peaks above a ``baseline`` taken once before the bench (so libraries and data
    loaded before it do not count), not rises above the block's own start: memory a path
    reuses from an earlier one (allocators keep what they freed) counts for every path.
    Device: ``torch.cuda.max_memory_allocated`` after a reset. Host: on Linux the kernel's
    resident high-water mark (``VmHWM``), reset before the block by writing 5 to
    ``/proc/self/clear_refs``; elsewhere ``getrusage``'s lifetime maximum (it cannot be
    reset, and the result says so). Loader worker processes are not counted.
    """

    def __init__(self, device: torch.device, baseline: tuple[float | None, float]) -> None:
        self.device = device
        self.host_baseline_mb, self.device_baseline_mb = baseline
        self.host_mb: float | None = None
        self.device_mb: float | None = None

    def __enter__(self) -> _PeakMemory:
        self.resettable = _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        peak_kb = _status_kb("VmHWM") if self.resettable else _maxrss_kb()
        if peak_kb is not None and self.host_baseline_mb is not None:
            self.host_mb = peak_kb / 1024 - self.host_baseline_mb
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.device_mb = peak - self.device_baseline_mb

    @staticmethod
    def baseline(device: torch.device) -> tuple[float | None, float]:
        """Host and device memory in use now (MB), to measure later peaks from."""
        host_kb = _status_kb("VmRSS") if _PROC_STATUS.exists() else _maxrss_kb()
        on_device = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        return None if host_kb is None else host_kb / 1024, on_device / 2**20


def _reset_peak_rss() -> bool:
    try:
        _PROC_STATUS.read_text()
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _maxrss_kb() -> int | None:
    """The process's lifetime peak resident memory in kB; None where unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if platform.system() == "Darwin" else peak  # bytes on macOS


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


# --- the run --------------------------------------------------------------------------


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
    _check_preset(preset)
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
    baseline = _PeakMemory.baseline(dev)
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
            with _PeakMemory(dev, baseline) as peak:
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
    return BenchResult(settings, results, teacher_alone)


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
    if _PROC_STATUS.exists():
        return (
            "peak resident memory of this process during the path (VmHWM) above its size "
            "before the bench (the seed-style loader's worker processes not counted)"
        )
    if _maxrss_kb() is None:
        return "host memory is not measured on this system"
    return "this process's lifetime peak resident memory (getrusage: cannot be reset per path)"


def save_bench(result: BenchResult, path: str | Path) -> Path:
    """Write ``result`` as JSON (atomically)."""
    return write_json(path, result.to_dict())
