"""``kdbook sweep``: a grid of book runs (shards, merging)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kdbook.cli.common import add_parameter_option, parse_value, show

SWEEP_EPILOG = """\
examples:
  kdbook sweep 05_distillation --grid temperature=1,2,4,8 --grid alpha=0.1,0.5,0.9 \\
      --seeds 3 --jobs 2 --out runs/sweep
  kdbook sweep 05 --grid temperature=1,4 --shard 1/2 --out runs/sweep-1   (on machine 1)
  kdbook sweep 05 --grid temperature=1,4 --shard 2/2 --out runs/sweep-2   (on machine 2)
  kdbook sweep --merge runs/sweep-1 runs/sweep-2 --out runs/sweep.csv
  kdbook sweep mybook/05_distillation.ipynb --grid temperature=1,4 --out runs/mine

NOTEBOOK is a name of the installed book (or a unique prefix) or a notebook file's path; a
file outside the book (an edited copy) is the one that runs. One papermill run per grid
point, in worker processes. Each point gets its own run folder DIR/runs/<point>/ and
leaves its executed notebook in DIR/points/<point>.ipynb; what it saved with save_metrics
is gathered into DIR/sweep.csv (one row per point and seed or setting).
A failed point is reported and recorded as failed; the others go on. Rerunning the same
command runs only the points that have no metrics yet. Exit status: 0 every point ok,
1 a point failed, 2 bad input (nothing was run).
"""


def add_sweep(sub: Any, fmt: type) -> None:
    """`kdbook sweep`: one notebook over a grid, or merged shards."""
    sweep = sub.add_parser(
        "sweep",
        help="run one notebook over a grid of parameters and gather one table",
        description="Run a notebook once per point of a parameter grid (papermill, in "
        "worker processes) and gather each point's metrics into DIR/sweep.csv; or merge "
        "the tables of several shards.",
        epilog=SWEEP_EPILOG,
        formatter_class=fmt,
    )
    sweep.add_argument(
        "notebook",
        nargs="?",
        metavar="NOTEBOOK",
        help="the notebook to sweep: a name (or unique prefix) or a notebook file's path",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a parameter and its values; repeat for a grid over several",
    )
    sweep.add_argument(
        "--seeds", type=int, metavar="N", help="seeds per point (the notebook's num_seeds)"
    )
    add_parameter_option(
        sweep, "set a fixed notebook parameter for every point; repeat for several"
    )
    sweep.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="points run at once (default: 1)"
    )
    sweep.add_argument(
        "--shard", metavar="i/n", help="run only shard i of n (every n-th point, from the i-th)"
    )
    sweep.add_argument(
        "--reuse-from",
        metavar="RUN_DIR",
        help="copy the checkpoints (*.pt, e.g. teacher.pt) of this run folder into each point's",
    )
    sweep.add_argument(
        "--timeout",
        type=int,
        default=900,
        metavar="SECONDS",
        help="seconds allowed per cell (default: 900)",
    )
    sweep.add_argument(
        "--merge", nargs="+", metavar="DIR", help="merge these sweep folders' tables into --out"
    )
    sweep.add_argument("--out", metavar="DIR", help="sweep folder (with --merge: the CSV file)")
    sweep.add_argument(
        "--wait",
        action="store_true",
        help="when another process is writing the same folder, wait for it to finish "
        "(default: refuse at once, naming it)",
    )


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """Read ``--grid NAME=V1,V2,...`` options.

    >>> parse_grid(["temperature=1,2", "alpha=0.5"])
    {'temperature': [1, 2], 'alpha': [0.5]}
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ValueError(
                f"--grid must be NAME=V1,V2,... such as temperature=1,2,4, got {spec!r}"
            )
        if name in grid:
            raise ValueError(f"--grid {name} is given twice")
        grid[name] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    from kdbook.machinery.runfolder import refuse_if_busy
    from kdbook.machinery.sweep import merge_sweeps, parse_shard, run_sweep

    if args.merge:
        if args.notebook or args.grid:
            raise ValueError("--merge takes sweep folders only: no NOTEBOOK or --grid")
        if not args.out:
            raise ValueError("--merge needs --out FILE (the merged CSV)")
        path = merge_sweeps(args.merge, args.out)
        print(f"merged table: {show(path)}")
        return 0
    if not args.notebook:
        raise ValueError("sweep needs a NOTEBOOK (or --merge DIR...)")
    if not args.grid:
        raise ValueError("sweep needs at least one --grid NAME=V1,V2,...")
    if not args.out:
        raise ValueError("sweep needs --out DIR (the sweep folder)")
    if not args.wait:
        refuse_if_busy(args.out)  # at once, before the slower checks of the input
    path = run_sweep(
        args.notebook,
        parse_grid(args.grid),
        args.out,
        seeds=args.seeds,
        params={name: parse_value(value) for name, value in args.parameters},
        jobs=args.jobs,
        shard=parse_shard(args.shard) if args.shard else None,
        timeout=args.timeout,
        reuse_from=args.reuse_from,
        wait=args.wait,
    )
    import pandas as pd

    status = pd.read_csv(path).drop_duplicates("point")["status"]
    failed = int((status != "ok").sum())
    print(f"sweep table: {show(path)} ({len(status) - failed} points ok, {failed} failed)")
    return 1 if failed else 0
