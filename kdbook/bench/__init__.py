"""``kdbook bench``: the sources' training loop against kdbook's, and stacked runs against
sequential ones.

- :mod:`kdbook.bench.run`: :func:`run_bench`, the three paths timed side by side.
- :mod:`kdbook.bench.data`: the sources' data path and a synthetic CIFAR-10.
- :mod:`kdbook.bench.result`: what is measured (:class:`BenchResult`, the table).
- :mod:`kdbook.bench.lm`: the language-model lines (15's KD step against the plain step,
  students side by side under vmap).
- :mod:`kdbook.bench.runs`: ``kdbook bench --seeds/--threads`` (whole runs, stacked or not).
"""

from __future__ import annotations

from kdbook.bench.data import (
    BENCH_PRESETS,
    SMOKE_STEPS,
    SMOKE_SYNTHETIC_SIZE,
    SMOKE_WARMUP,
    PILDataset,
    bench_data,
    seed_style_loader,
    synthetic_cifar10,
)
from kdbook.bench.lm import (
    LM_CACHED,
    LM_KD,
    LM_PLAIN,
    LM_STACKED,
    lm_paths,
)
from kdbook.bench.result import (
    CACHED,
    KDBOOK,
    SEED_STYLE,
    TEACHER_ALONE,
    BenchResult,
    PathResult,
)
from kdbook.bench.run import (
    ALPHA,
    DEFAULT_REPEATS,
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    TEMPERATURE,
    Batch,
    run_bench,
    save_bench,
)
from kdbook.bench.runs import (
    RunsBench,
    bench_seeds,
    bench_threads,
    busy_neighbour,
)

__all__ = [
    "ALPHA",
    "BENCH_PRESETS",
    "Batch",
    "BenchResult",
    "CACHED",
    "DEFAULT_REPEATS",
    "DEFAULT_STEPS",
    "DEFAULT_WARMUP",
    "KDBOOK",
    "LM_CACHED",
    "LM_KD",
    "LM_PLAIN",
    "LM_STACKED",
    "PILDataset",
    "PathResult",
    "RunsBench",
    "SEED_STYLE",
    "SMOKE_STEPS",
    "SMOKE_SYNTHETIC_SIZE",
    "SMOKE_WARMUP",
    "TEACHER_ALONE",
    "TEMPERATURE",
    "bench_data",
    "bench_seeds",
    "bench_threads",
    "busy_neighbour",
    "lm_paths",
    "run_bench",
    "save_bench",
    "seed_style_loader",
    "synthetic_cifar10",
]
