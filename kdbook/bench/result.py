"""What a benchmark measures: per path images per second, peak memory, and the table."""

from __future__ import annotations

import math
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

SEED_STYLE, KDBOOK, CACHED = "seed-style", "kdbook", "kdbook + cached logits"
TEACHER_ALONE = "teacher alone (kdbook)"
PROC_STATUS = Path("/proc/self/status")


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

    def add_round(self, images: int, seconds: float, losses: list[float], peak: PeakMemory) -> None:
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
    lm: list[PathResult] = field(default_factory=list)  # chapter 15's steps (kdbook.bench.lm)

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
        lm = []
        for p in self.lm:
            row = asdict(p)
            row.pop("losses")
            row["chars_per_s"] = p.images_per_s  # a language model's "images" are characters
            lm.append(row)
        return {"settings": self.settings, "paths": rows, "teacher_alone": teacher, "lm": lm}

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
        if self.lm:
            lines += ["", f"language models (15): teacher {s['lm_teacher']}, student "
                      f"{s['lm_student']}, batch {s['lm_batch']} windows of {s['lm_context']} "
                      "characters, the same steps and rounds",
                      f"{'line':<24} {'chars/s':>10} {'x alone':>7} {'peak MB':>8}"]  # fmt: skip
            for p in self.lm:
                peak = p.peak_device_mb if p.peak_device_mb is not None else p.peak_host_mb
                peak_text = "n/a" if peak is None else f"{peak:.0f}"
                rate = f"{p.images_per_s:>10.0f} {p.ratio:>6.2f}x"
                lines.append(f"{p.name:<24} {rate} {peak_text:>8}")
        lines.append("")
        lines.append(f"peak MB: {s['memory_note']}")
        notes = [*self.paths, *([t] if t is not None else []), *self.lm]
        lines += [f"{p.name}: {p.note}" for p in notes if p.note]
        return "\n".join(lines)


class PeakMemory:
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

    def __enter__(self) -> PeakMemory:
        self.resettable = _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        peak_kb = _status_kb("VmHWM") if self.resettable else maxrss_kb()
        if peak_kb is not None and self.host_baseline_mb is not None:
            self.host_mb = peak_kb / 1024 - self.host_baseline_mb
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.device_mb = peak - self.device_baseline_mb

    @staticmethod
    def baseline(device: torch.device) -> tuple[float | None, float]:
        """Host and device memory in use now (MB), to measure later peaks from."""
        host_kb = _status_kb("VmRSS") if PROC_STATUS.exists() else maxrss_kb()
        on_device = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        return None if host_kb is None else host_kb / 1024, on_device / 2**20


def _reset_peak_rss() -> bool:
    try:
        PROC_STATUS.read_text()
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def maxrss_kb() -> int | None:
    """The process's lifetime peak resident memory in kB; None where unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if platform.system() == "Darwin" else peak  # bytes on macOS
