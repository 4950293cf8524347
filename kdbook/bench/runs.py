"""What a comparison costs: seeds side by side against one at a time, and the thread choice.

``kdbook bench --seeds N`` trains, in one run on the same data, one single-seed ``fit``
(the unit), N seeds x (scratch, KD) one ``fit`` at a time (the book's comparisons before
:mod:`kdbook.stack`), the same runs side by side (:func:`kdbook.stack.fit_stacked`), and a
tuned comparison as the book runs one (:func:`kdbook.tuning.tune`: methods x settings x
seeds side by side where they stack, then the chosen settings over the seeds).
It reports seconds, images per second per run and the ratios. ``kdbook bench --thread-choice``
times three kinds of run (teacher, student alone, distilled student) at one thread and at
every core, next to what ``threads="auto"`` picks: the classroom's, and the mid-sized runs
of the ``imagefolder`` preset on a CPU. ``--neighbour``
keeps a busy process (``python3 -c "while True: pass"``) running through the timings:
a classroom laptop's browser and the rest.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from kdbook.config import make_config


@contextlib.contextmanager
def busy_neighbour(on: bool = True) -> Iterator[None]:
    """A process spinning on one core while the block runs (nothing when ``on`` is False)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it take its core
        yield
    finally:
        proc.kill()
        proc.wait()


@dataclass
class RunsBench:
    """Timings of one ``kdbook bench --seeds`` or ``--thread-choice`` run."""

    kind: str  # "seeds" or "threads"
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        frame = pd.DataFrame(self.rows).set_index(next(iter(self.rows[0])))
        lines = [frame.to_string(float_format=lambda v: f"{v:.3g}")]
        lines += [f"{k}: {v}" for k, v in self.settings.items()]
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)
        return path


def _classroom(num_epochs: int | None):
    from kdbook.data import load_dataset
    from kdbook.models import build_model
    from kdbook.train import fit

    cfg = make_config(preset="classroom", **({"num_epochs": num_epochs} if num_epochs else {}))
    data = load_dataset(cfg.dataset, image_size=cfg.image_size)
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher, data)
    fit(teacher, data, num_epochs=2, progress=False)  # any weights do: the cost is the same
    return cfg, data, teacher


TUNING_BUDGET = 2  # settings tried per method in the bench's tuned comparison


def _tuned_methods(cfg, teacher) -> list:
    """The bench's tuned comparison: the student alone, KD and DKD, each with its own space."""
    from kdbook.compare import SCRATCH
    from kdbook.losses import DKD
    from kdbook.tuning import Method

    lrs = [cfg.lr / 2, cfg.lr]
    return [
        Method(SCRATCH, {"lr": lrs}),
        Method("KD", {"lr": lrs, "temperature": [2.0, 4.0]}, {"teacher": teacher}),
        Method("DKD", {"lr": lrs, "beta": [1.0, 2.0]},
               lambda beta: {"teacher": teacher, "terms": [DKD(beta=beta)]}),
    ]  # fmt: skip


def _tuned_comparison(cfg, data, methods: list, seeds: int) -> None:
    """:func:`kdbook.tuning.tune` then the final comparison, as notebooks 05 and 13 run them."""
    from kdbook.tuning import tune

    kwargs = cfg.fit_kwargs()
    tuning = tune(cfg.student, data, methods, budget=TUNING_BUDGET, seeds=range(seeds),
                  progress=False, **kwargs)  # fmt: skip
    tuning.compare(seeds=range(seeds), progress=False)


def bench_seeds(
    seeds: int = 5, *, num_epochs: int | None = None, neighbour: bool = False
) -> RunsBench:
    """One fit, then ``seeds`` x (scratch, KD) fits one at a time, then the same side by side."""
    from kdbook.models import build_model
    from kdbook.stack import fit_stacked
    from kdbook.train import fit

    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    cfg, data, teacher = _classroom(num_epochs)
    kwargs = cfg.fit_kwargs(progress=False)
    runs = [{"seed": s} for s in range(seeds)] + [
        {"seed": s, "teacher": teacher} for s in range(seeds)
    ]

    def models() -> list[torch.nn.Module]:
        out = []
        for run in runs:
            torch.manual_seed(run["seed"])
            out.append(build_model(cfg.student, data))
        return out

    def timed(work) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    methods = _tuned_methods(cfg, teacher)
    tuned_runs = len(methods) * TUNING_BUDGET * seeds + len(methods) * seeds
    with busy_neighbour(neighbour):
        one = timed(lambda: fit(models()[seeds], data, **kwargs, **runs[seeds]))
        pairs = list(zip(models(), runs, strict=True))
        sequential = timed(lambda: [fit(m, data, **kwargs, **r) for m, r in pairs])
        stacked = timed(lambda: fit_stacked(models(), data, runs, **kwargs))
        tuned = timed(lambda: _tuned_comparison(cfg, data, methods, seeds))
    images = len(data.train) * cfg.num_epochs
    rows = []
    for name, seconds, n, one_at_a_time in (
        ("one fit (KD, 1 seed)", one, 1, one),
        (f"{len(runs)} fits one at a time", sequential, len(runs), sequential),
        (f"{len(runs)} runs side by side", stacked, len(runs), sequential),
        (
            f"tuned comparison, {tuned_runs} runs: {len(methods)} methods x {TUNING_BUDGET} "
            f"settings x {seeds} seeds on validation, then the chosen x {seeds} seeds",
            tuned,
            tuned_runs,
            None,
        ),
    ):
        rows.append(
            {
                "path": name,
                "seconds": seconds,
                "images/s per run": images * n / seconds / n,
                "time vs one fit (x)": seconds / one,
                "speed-up vs one at a time (x)": (
                    one_at_a_time / seconds if one_at_a_time is not None else float("nan")
                ),
            }
        )
    settings = {
        "tuned comparison": ", ".join(f"{m.name} {dict(m.space)}" for m in methods),
        "runs": f"{seeds} seeds x (scratch, KD), {cfg.student} from {cfg.teacher}",
        "epochs": cfg.num_epochs,
        "torch threads": torch.get_num_threads(),
        "busy neighbour": neighbour,
    }
    return RunsBench("seeds", rows, settings)


def _imagefolder_on_cpu(num_epochs: int):
    """The ``imagefolder`` preset's CPU sizes on 480 CIFAR-shaped SYNTHETIC images (3 x 32 x 32,
    a small photo tree's size): the mid-sized runs between the classroom's and a GPU's."""
    from kdbook.data import synthetic_cifar10
    from kdbook.models import build_model
    from kdbook.train import fit

    # The preset's sizes on a CPU (CPU_SIZES: 32 px, simple_resnet teacher); the data set
    # named here only fills the required parameter: the runs use ``data``.
    cfg = make_config(preset="imagefolder", dataset="digits", device="cpu", num_epochs=num_epochs)
    data = synthetic_cifar10(480)  # 32 px, the CPU sizes' image_size
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher, data)
    fit(teacher, data, num_epochs=1, progress=False)  # any weights do: the cost is the same
    return cfg, data, teacher


def bench_threads(*, num_epochs: int = 3, neighbour: bool = False) -> RunsBench:
    """Teacher, student alone and distilled student at 1 thread and at every core, for the
    classroom (digits) and for the ``imagefolder`` preset's CPU sizes (32 px RGB)."""
    from kdbook.models import build_model
    from kdbook.runtime import available_cores, choose_threads, step_flops, use_threads
    from kdbook.train import fit

    setups = {
        "classroom": _classroom(num_epochs),
        "imagefolder on a CPU": _imagefolder_on_cpu(num_epochs),
    }
    cores = available_cores()
    rows = []
    with busy_neighbour(neighbour):
        for setup, (cfg, data, teacher) in setups.items():
            for name, arch, extra in (
                ("teacher", cfg.teacher, {}),
                ("student alone", cfg.student, {}),
                ("distilled student", cfg.student, {"teacher": teacher}),
            ):
                torch.manual_seed(0)
                init = build_model(arch, data)
                use_threads("auto")
                models = [init, *([teacher] if extra else [])]
                auto = choose_threads(*models, data=data, batch_size=cfg.batch_size)
                shape = (data.in_channels, data.image_size, data.image_size)
                seconds = {}
                for threads in sorted({1, cores}):
                    use_threads(threads)
                    model = copy.deepcopy(init)
                    start = time.perf_counter()
                    fit(model, data, **cfg.fit_kwargs(progress=False), **extra)
                    seconds[threads] = time.perf_counter() - start
                rows.append(
                    {
                        "run": f"{setup}: {name}",
                        "step GFLOPs": step_flops(models, shape, cfg.batch_size) / 1e9,
                        "s at 1 thread": seconds[1],
                        f"s at {cores} threads": seconds[cores],
                        f"{cores} threads vs 1 (x)": seconds[cores] / seconds[1],
                        "auto picks": auto,
                    }
                )
    use_threads("auto")
    settings = {"epochs": num_epochs, "cores": cores, "busy neighbour": neighbour}
    return RunsBench("threads", rows, settings)
