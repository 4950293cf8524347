"""The ``kdbook`` command: run the book headless and inspect its parameters.

Longer than kdbook's other modules (about 800 lines) because it holds the argparse
declarations and examples of all ten subcommands (``_add_*``) and their thin handlers
(``_cmd_*``); the work itself lives in the modules they call.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAIN_EPILOG = """\
examples:
  kdbook notebooks mybook                       copy a fresh set of the notebooks into mybook/
  kdbook lab mybook                             open JupyterLab on them
  kdbook book                                   run every notebook into runs/<timestamp>/
  kdbook book --out runs/ci                     ... into a folder of your choice
  kdbook book --only 04_loss -p temperature 2.0 --out runs/t2
  kdbook book -p preset cifar10                 CIFAR-10 sizes (data in data/, see data/README.md)
  kdbook params                                 the parameters every notebook declares
  kdbook params 05_distillation
  kdbook sweep 05 --grid temperature=1,2,4,8 --grid alpha=0.5,0.9 --seeds 3 --out runs/sweep
  kdbook bench                                  the sources' training loop against kdbook's
  kdbook train --teacher runs/t/teacher.pt --out runs/t/kd.pt   one training (torchrun too)
  kdbook data                                   which data sets are in place, and their sizes
  kdbook html runs/ci                           render a run folder as HTML again

Run `kdbook COMMAND --help` for the options of one command.
"""

BOOK_EPILOG = """\
examples:
  kdbook book --out runs/ci
  kdbook book --only 04_loss -p temperature 2.0 --out runs/t2
  kdbook book --only 02 03 -p preset cifar10 -p device cuda
  kdbook book --only mybook/05_distillation.ipynb --out runs/mine   an edited copy
  kdbook book -p dataset imagefolder:data/chest_xray -p preset imagefolder

Values of -p are read like papermill's: an integer, else a float, else True/False/None,
else a string. Each notebook receives only the parameters its parameters cell declares,
plus run_dir (the run folder). The run folder gets the executed notebooks, results.json,
summary.md, metrics/ and figures/. Exit status: 0 ok, 1 a notebook failed, 2 bad input.
"""

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

BENCH_EPILOG = """\
examples:
  kdbook bench                                  classroom preset (digits) on the CPU
  kdbook bench --threads 2 --out runs/bench.json
  kdbook bench --no-augment                     all three paths the same recipe (cache valid)
  kdbook bench --preset cifar10 --device cuda --synthetic   CIFAR-shaped random images
  kdbook bench --smoke                          a few steps: checks that it runs (CI)

Paths: seed-style (torchvision DataLoader, per-sample PIL transforms, 2 workers, fp32, the
teacher every step), kdbook (kdbook.data.Loader: tensors prepared once, batched
augmentation), kdbook + cached logits (the teacher's logits computed once; the same recipe
only without augmentation, and the table says when it is not). Same data, models, loss,
optimizer and batch size in all three. Exit status: 0 ok, 2 bad input.
"""

DATA_EPILOG = """\
examples:
  kdbook data                                   digits and cifar10
  kdbook data imagefolder:data/chest_xray       your own train/ val/ test/ <class>/ tree

Exit status: 0 every data set loaded, 1 one is not in place or not readable (the line says
what to do), 2 bad input.
"""

TRAIN_EPILOG = """\
examples:
  kdbook train --model teacher --out runs/t/teacher.pt          the preset's teacher
  kdbook train --teacher runs/t/teacher.pt --out runs/t/kd.pt   the preset's student, distilled
  kdbook train --out runs/t/alone.pt                            the student alone
  kdbook train -p preset cifar10 -p num_epochs 30 --model teacher --out runs/c/teacher.pt
  torchrun --standalone --nproc-per-node 2 -m kdbook train --teacher T.pt --out kd.pt

One fit() call (kdbook.train.fit), the same under torchrun: there every process takes its
slice of each global batch of batch_size (DistributedDataParallel, NCCL on GPUs, gloo on
CPUs), and only rank 0 prints and writes. OUT gets the checkpoint (rewritten every epoch,
so rerunning the command resumes an interrupted run) and OUT.json the history and the test
accuracy. -p takes the book's shared parameters (kdbook params). Exit status: 0 ok,
2 bad input (nothing was trained).
"""

NOTEBOOKS_EPILOG = """\
examples:
  kdbook notebooks mybook                       a fresh set for a student
  kdbook notebooks mybook --force               ... replacing the notebooks you edited there

Copies the notebooks of the installed kdbook, without outputs, into DIR (created when
missing). A notebook already in DIR that you edited is kept, never overwritten, unless
--force; one that is still the copy kdbook made is brought up to date. The notebooks' run
folder (run_dir) is DIR/runs/lab. Exit status: 0 ok, 1 an edited notebook was kept, 2 bad
input.
"""

LAB_EPILOG = """\
examples:
  kdbook lab                                    JupyterLab on ./kdbook-notebooks
  kdbook lab mybook

DIR gets a fresh set of the notebooks first when it has none (kdbook notebooks DIR).
JupyterLab is this environment's; the sliders are core ipywidgets 8 widgets, so the
notebooks also work in Jupyter Notebook 7 and in VS Code's notebook view.
"""

DEFAULT_LAB_DIR = "kdbook-notebooks"

PARAMS_EPILOG = """\
examples:
  kdbook params                 every notebook
  kdbook params 04_loss         one notebook (a unique prefix such as 04 works too)
"""


def parse_value(text: str) -> Any:
    """Read a ``-p`` value like papermill's CLI: int, then float, then True/False/None,
    else the string itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return {"True": True, "False": False, "None": None}.get(text, text)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``kdbook: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"kdbook: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _add_parameter_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``-p NAME VALUE``, repeatable, collected in ``args.parameters`` (book and sweep)."""
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        dest="parameters",
        help=help,
    )


def _train_parameters_help() -> str:
    """The ``-p`` parameters of ``kdbook train``, from their one declaration (kdbook.config)."""
    from kdbook.config import TRAIN_FIELDS, describe

    lines = "\n".join(f"  {line}" for line in describe(TRAIN_FIELDS))
    return f"\nparameters (-p NAME VALUE; None means the preset's):\n{lines}\n"


def build_parser() -> argparse.ArgumentParser:
    """Build the ``kdbook`` argument parser."""
    from kdbook import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="kdbook",
        description="kdbook: a Jupyter workbook on knowledge distillation. This command runs "
        "the notebooks headless (papermill) and reports what they found.",
        epilog=MAIN_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"kdbook {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_notebooks(sub, fmt)
    _add_lab(sub, fmt)
    _add_book(sub, fmt)
    _add_params(sub, fmt)
    _add_doctor(sub, fmt)
    _add_sweep(sub, fmt)
    _add_html(sub, fmt)
    _add_data(sub, fmt)
    _add_train(sub, fmt)
    _add_bench(sub, fmt)
    return parser


def _add_notebooks(sub: Any, fmt: type) -> None:
    """`kdbook notebooks`: a fresh copy of the book for a student."""
    notebooks = sub.add_parser(
        "notebooks",
        help="copy a fresh, output-free set of the book's notebooks into a folder",
        description="Copy the installed book's notebooks (no outputs) into DIR for a "
        "student. An edited notebook already there is never overwritten without --force.",
        epilog=NOTEBOOKS_EPILOG,
        formatter_class=fmt,
    )
    notebooks.add_argument("folder", metavar="DIR", help="the folder to copy the notebooks into")
    notebooks.add_argument(
        "--force",
        action="store_true",
        help="replace notebooks you edited in DIR with fresh copies (your changes are lost)",
    )


def _add_lab(sub: Any, fmt: type) -> None:
    """`kdbook lab`: JupyterLab on a copy of the book."""
    lab = sub.add_parser(
        "lab",
        help="open JupyterLab on a folder of the book's notebooks (copied there if none)",
        description="Open this environment's JupyterLab on DIR; a DIR without notebooks "
        "first gets a fresh set of the book's (kdbook notebooks DIR).",
        epilog=LAB_EPILOG,
        formatter_class=fmt,
    )
    lab.add_argument(
        "folder",
        nargs="?",
        default=DEFAULT_LAB_DIR,
        metavar="DIR",
        help=f"the book folder (default: {DEFAULT_LAB_DIR})",
    )


def _add_book(sub: Any, fmt: type) -> None:
    """`kdbook book`: run the notebooks into a run folder."""
    book = sub.add_parser(
        "book",
        help="execute the notebooks in order into a run folder (papermill)",
        description="Execute the book's notebooks in order with papermill into one run "
        "folder, then write results.json and summary.md there.",
        epilog=BOOK_EPILOG,
        formatter_class=fmt,
    )
    book.add_argument("--out", metavar="DIR", help="run folder (default: runs/<YYYYmmdd-HHMMSS>)")
    book.add_argument(
        "--only",
        nargs="+",
        metavar="NB",
        help="run only these notebooks: a name such as 04_loss, a unique prefix such as 04, "
        "or a notebook file's path (one outside the book runs that file)",
    )
    _add_parameter_option(book, "set a notebook parameter; repeat for several")
    book.add_argument(
        "--timeout",
        type=int,
        default=900,
        metavar="SECONDS",
        help="seconds allowed per cell (default: 900)",
    )
    book.add_argument(
        "--rerun",
        action="store_true",
        help="run every notebook again; by default a rerun into the same --out folder with the "
        "same parameters skips the notebooks that finished there",
    )
    book.add_argument(
        "--wait",
        action="store_true",
        help="when another process is writing the same folder, wait for it to finish "
        "(default: refuse at once, naming it)",
    )


def _add_params(sub: Any, fmt: type) -> None:
    """`kdbook params`: the parameters each notebook declares."""
    params = sub.add_parser(
        "params",
        help="list the parameters each notebook declares",
        description="List the parameters declared in each notebook's parameters cell: "
        "name, type, default and comment.",
        epilog=PARAMS_EPILOG,
        formatter_class=fmt,
    )
    params.add_argument("notebook", nargs="?", metavar="NOTEBOOK", help="one notebook only")


def _add_doctor(sub: Any, fmt: type) -> None:
    """`kdbook doctor`: the environment check."""
    doctor = sub.add_parser(
        "doctor",
        help="check versions, device, the notebook kernel and the data sets",
        description="Check this environment for the book: package versions, the device "
        "(CUDA, bf16), that the python3 kernel runs this interpreter, and which data sets "
        "are in place; say what to do about each. Exit status: 0 ok, 1 something the book "
        "needs is broken (a FAIL line).",
        formatter_class=fmt,
    )
    doctor.add_argument(
        "--data", default="data", metavar="DIR", help="where data sets live (default: data)"
    )


def _add_sweep(sub: Any, fmt: type) -> None:
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
    _add_parameter_option(
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


def _add_html(sub: Any, fmt: type) -> None:
    """`kdbook html`: render a run folder as HTML again."""
    html = sub.add_parser(
        "html",
        help="render a run folder's executed notebooks as a static HTML book again",
        description="Write RUN/html/ (index.html and one page per executed notebook, "
        "widgets included, nothing loaded from a network). kdbook book does it at the end "
        "of every run; this renders a run folder again.",
    )
    html.add_argument("run", metavar="RUN", help="a run folder written by kdbook book")


def _add_data(sub: Any, fmt: type) -> None:
    """`kdbook data`: what a data set holds."""
    data = sub.add_parser(
        "data",
        help="show what a data set holds (sizes, shape, classes), or what to put where",
        description="Load each named data set and print its splits, image shape, classes "
        "and training augmentation; a data set that is not in place says which files to "
        "put where.",
        epilog=DATA_EPILOG,
        formatter_class=fmt,
    )
    data.add_argument(
        "specs",
        nargs="*",
        metavar="DATASET",
        help="digits, cifar10 or imagefolder:PATH (default: digits and cifar10)",
    )
    data.add_argument("--root", default="data", help="the data folder (default: data)")


def _add_train(sub: Any, fmt: type) -> None:
    """`kdbook train`: one fit, under torchrun too."""
    train = sub.add_parser(
        "train",
        help="train one model with fit(): teacher, student alone or distilled (torchrun too)",
        description="Train one model with kdbook.train.fit on the preset's data and save "
        "its checkpoint; under torchrun, as DistributedDataParallel.",
        epilog=TRAIN_EPILOG + _train_parameters_help(),
        formatter_class=fmt,
    )
    train.add_argument(
        "--model",
        default="student",
        metavar="NAME",
        help="'student' or 'teacher' (the preset's) or a registered model name (default: student)",
    )
    train.add_argument(
        "--teacher", metavar="CKPT", help="a teacher checkpoint to distil from (default: none)"
    )
    _add_parameter_option(train, "a shared parameter (listed below); repeat for several")
    train.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default auto: bf16 on GPUs, fp32 on CPUs)",
    )
    train.add_argument(
        "--accumulation-steps",
        type=int,
        default=1,
        metavar="N",
        help="split each batch into N chunks, gradients accumulated (default 1)",
    )
    train.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="keep this fraction of the training labels (default: all)",
    )
    train.add_argument(
        "--log-dir", metavar="DIR", help="TensorBoard scalars per epoch (default: none)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--out", required=True, metavar="FILE.pt", help="the checkpoint to write")


def _add_bench(sub: Any, fmt: type) -> None:
    """`kdbook bench`: the sources' loop against kdbook's step."""
    bench = sub.add_parser(
        "bench",
        help="time the sources' training loop against kdbook's (images/s, memory, ratio)",
        description="Train the same student with the same teacher three ways in one run "
        "and print images/s, peak memory and the speed-up over the sources' loop.",
        epilog=BENCH_EPILOG,
        formatter_class=fmt,
    )
    bench.add_argument(
        "--preset",
        default="classroom",
        choices=["classroom", "cifar10"],
        help="data and models (default: classroom, digits on a CPU)",
    )
    bench.add_argument(
        "--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: the preset's)"
    )
    bench.add_argument(
        "--steps", type=int, metavar="N", help="timed steps per round (default 100; smoke 3)"
    )
    bench.add_argument(
        "--warmup", type=int, metavar="N", help="untimed steps first (default 5; smoke 1)"
    )
    bench.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="rounds, the paths taking turns; each reports its median (default 3; smoke 1)",
    )
    bench.add_argument(
        "--batch-size", type=int, default=128, metavar="N", help="images per step (default 128)"
    )
    bench.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default: what training picks, threads='auto')",
    )
    bench.add_argument(
        "--no-augment",
        action="store_false",
        dest="augment",
        help="no augmentation in any path (then the cached path trains the same recipe)",
    )
    bench.add_argument(
        "--synthetic",
        action="store_true",
        help="cifar10 preset: random CIFAR-shaped images instead of the files in data/",
    )
    bench.add_argument(
        "--smoke", action="store_true", help="a few steps only: checks that it runs (CI)"
    )
    bench.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="instead: N seeds x (scratch, KD) side by side against one at a time and one fit",
    )
    bench.add_argument(
        "--thread-choice",
        action="store_true",
        help="instead: the classroom's runs at 1 thread and every core, and threads='auto'",
    )
    bench.add_argument(
        "--epochs", type=int, metavar="N", help="--seeds/--thread-choice: epochs per run"
    )
    bench.add_argument(
        "--neighbour",
        action="store_true",
        help="--seeds/--thread-choice: a busy process on one core while timing",
    )
    bench.add_argument("--out", metavar="FILE", help="also write the result as JSON here")


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


def _cmd_sweep(args: argparse.Namespace) -> int:
    from kdbook.machinery.runfolder import refuse_if_busy
    from kdbook.machinery.sweep import merge_sweeps, parse_shard, run_sweep

    if args.merge:
        if args.notebook or args.grid:
            raise ValueError("--merge takes sweep folders only: no NOTEBOOK or --grid")
        if not args.out:
            raise ValueError("--merge needs --out FILE (the merged CSV)")
        path = merge_sweeps(args.merge, args.out)
        print(f"merged table: {_show(path)}")
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
    print(f"sweep table: {_show(path)} ({len(status) - failed} points ok, {failed} failed)")
    return 1 if failed else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from datetime import datetime

    from kdbook.machinery.runfolder import refuse_if_busy, stale_line
    from kdbook.machinery.runner import run_book

    out = Path(args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    if not args.wait:
        refuse_if_busy(out)  # at once, before the slower checks of the input
    if (note := stale_line(out)) is not None:
        print(note)
    params = {name: parse_value(value) for name, value in args.parameters}
    run_dir = run_book(
        out=out,
        only=args.only,
        params=params,
        timeout=args.timeout,
        rerun=args.rerun,
        wait=args.wait,
    )
    print(f"run folder: {_show(run_dir)}")
    print(f"summary:    {_show(run_dir / 'summary.md')}")
    print(f"html book:  {_show(run_dir / 'html' / 'index.html')}")
    return 0


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from kdbook.machinery.installed import copy_notebooks

    report = copy_notebooks(args.folder, force=args.force)
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("kept") else sys.stdout)
    print(f"book folder: {_show(Path(args.folder))} (open it: kdbook lab {args.folder})")
    return 1 if report.kept else 0


def _cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    from kdbook.machinery.installed import copy_notebooks, lab_command

    folder = Path(args.folder)
    if not (folder.is_dir() and any(folder.glob("*.ipynb"))):
        report = copy_notebooks(folder)
        print(f"copied the book into {_show(folder)}: {len(report.copied)} notebooks")
    return subprocess.call(lab_command(folder))


def _cmd_params(args: argparse.Namespace) -> int:
    from kdbook.machinery.selection import notebook_parameters, select_notebooks

    sources = select_notebooks([args.notebook] if args.notebook else None)
    for i, (name, source) in enumerate(sources.items()):
        if i:
            print()
        print(name)
        declared = notebook_parameters(source)
        if not declared:
            print("  (no parameters cell)")
        for p in declared.values():
            line = f"  {p['name']}: {_type_name(p)} = {p.get('default')}"
            if p.get("help"):
                line += f"  # {p['help']}"
            print(line)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from kdbook.environment import FAIL, environment_report, format_report

    rows = environment_report(args.data)
    print(format_report(rows))
    broken = [r.name for r in rows if r.status == FAIL]
    if broken:
        print(f"\nbroken: {', '.join(broken)} (see 'what to do')")
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from kdbook.bench import run_bench, save_bench

    if args.seeds is not None or args.thread_choice:
        return _cmd_bench_runs(args)

    result = run_bench(
        args.preset,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        batch_size=args.batch_size,
        augment=args.augment,
        synthetic=args.synthetic,
        smoke=args.smoke,
        threads=args.threads,
    )
    print(result.table())
    if args.smoke:
        print("(smoke mode: a few steps to check that the bench runs; not a measurement)")
    if args.out:
        print(f"\nresult: {_show(save_bench(result, args.out))}")
    return 0


def _cmd_bench_runs(args: argparse.Namespace) -> int:
    from kdbook.bench.runs import bench_seeds, bench_threads

    if args.seeds is not None and args.thread_choice:
        raise ValueError("--seeds and --thread-choice measure different things: give one")
    if args.epochs is not None and not (isinstance(args.epochs, int) and args.epochs >= 1):
        raise ValueError(f"--epochs must be an integer >= 1, got {args.epochs!r}")
    if args.seeds is not None:
        result = bench_seeds(args.seeds, num_epochs=args.epochs, neighbour=args.neighbour)
    else:
        result = bench_threads(num_epochs=args.epochs or 3, neighbour=args.neighbour)
    print(result.table())
    if args.out:
        print(f"\nresult: {_show(result.save(args.out))}")
    return 0


def _cmd_html(args: argparse.Namespace) -> int:
    from kdbook.machinery.html import render_html

    run = Path(args.run)
    if not run.is_dir() or not any(run.glob("*.ipynb")):
        raise FileNotFoundError(
            f"run folder {args.run} holds no executed notebooks: give a folder written by "
            "kdbook book --out"
        )
    from kdbook.machinery.runfolder import stale_line

    if (note := stale_line(run)) is not None:
        print(note)
    print(f"html: {_show(render_html(run))}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from kdbook.config import check_dataset_spec
    from kdbook.data import load_dataset

    specs = args.specs or ["digits", "cifar10"]
    for spec in specs:
        check_dataset_spec(spec)
    failed = 0
    for spec in specs:
        try:
            data = load_dataset(spec, args.root)
        except (FileNotFoundError, ValueError) as e:
            print(f"{spec}: not ready: {e}")
            failed += 1
            continue
        info = data.summary()
        aug = data.augment
        print(
            f"{spec}: train {info['train']}, val {info['val']}, test {info['test']} images of "
            f"shape {tuple(info['shape'])}, {info['classes']} classes "
            f"({', '.join(data.classes[:10])}{', ...' if len(data.classes) > 10 else ''}); "
            f"augmentation: shift {aug.pad} px, flip {'yes' if aug.flip else 'no'}"
        )
    return 1 if failed else 0


def _train_inputs(args: argparse.Namespace):
    """``kdbook train``'s arguments checked before any work: the config, model name, out."""
    from kdbook.config import TRAIN_FIELDS, make_config
    from kdbook.data import check_available
    from kdbook.models import list_models

    params = {name: parse_value(value) for name, value in args.parameters}
    unknown = sorted(set(params) - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(
            f"parameter {unknown[0]!r} is not one kdbook train takes; accepted: "
            f"{', '.join(TRAIN_FIELDS)}"
        )
    cfg = make_config(**params)
    name = {"student": cfg.student, "teacher": cfg.teacher}.get(args.model, args.model)
    if name not in list_models():
        raise ValueError(
            f"--model must be 'student', 'teacher' or one of {list_models()}, got {name!r}"
        )
    out = Path(args.out)
    if out.suffix != ".pt":
        raise ValueError(f"--out must name a .pt file, got {args.out!r}")
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise FileNotFoundError(f"--teacher checkpoint {args.teacher} does not exist")
    check_available(cfg.dataset)
    return cfg, name, out


def _join_processes(device: str) -> tuple[int, str]:
    """Under torchrun, join the process group (NCCL on GPUs, gloo on CPUs): world, device."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # launched by torchrun: one process per device (or CPU slice)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world, device


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch
    import torch.distributed as dist

    from kdbook.checkpoint import load_checkpoint
    from kdbook.data import load_dataset
    from kdbook.evaluate import accuracy, predict
    from kdbook.io import write_json
    from kdbook.models import build_model
    from kdbook.train import TensorBoard, fit

    cfg, name, out = _train_inputs(args)
    world, device = _join_processes(cfg.device)
    try:
        rank = int(os.environ.get("RANK", "0"))
        data = load_dataset(cfg.dataset, image_size=cfg.image_size)
        if args.label_fraction is not None:
            data = data.with_label_fraction(args.label_fraction, seed=cfg.seed)
        teacher = None
        if args.teacher is not None:
            teacher = load_checkpoint(args.teacher, data)[0]
        torch.manual_seed(cfg.seed)
        model = build_model(name, data)
        if rank == 0:
            role = f"distilled from {args.teacher}" if teacher is not None else "alone"
            print(f"train: {name} {role} on {data.name}, {world} process(es), device {device}")
        history = fit(
            model,
            data,
            teacher=teacher,
            **cfg.fit_kwargs(device=device),
            precision=args.precision,
            accumulation_steps=args.accumulation_steps,
            seed=cfg.seed,
            checkpoint=out,
            hooks=[TensorBoard(args.log_dir)] if args.log_dir is not None else [],
            progress=not args.no_progress,
            desc=f"train {name}",
        )
        if rank == 0:
            test_acc = accuracy(predict(model, data, "test", device), data.test.labels)
            report = {
                "model": name,
                "teacher": args.teacher,
                "config": cfg.as_dict(),
                "settings": history.settings,
                "epochs": history.epochs,
                "test_acc": test_acc,
            }
            json_path = write_json(out.with_suffix(".json"), report)
            final = history.final
            print(
                f"train: {history.settings['num_epochs']} epochs, val {final['val_acc']:.2f}%, "
                f"test {test_acc:.2f}%; saved {_show(out)} and {_show(json_path)}"
            )
        if world > 1:
            dist.barrier()  # every rank leaves together, after rank 0 has written
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0


def _type_name(param: dict[str, Any]) -> str:
    """The annotated type, else the type of the default literal (``4.0`` -> ``float``)."""
    annotated = param.get("inferred_type_name")
    if annotated and annotated != "None":
        return str(annotated)
    try:
        return type(ast.literal_eval(str(param.get("default")))).__name__
    except (ValueError, SyntaxError):
        return "?"


def _show(path: Path) -> str:
    """A path relative to the current directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kdbook`` command; return its exit status (0 ok, 1 failure, 2 bad input)."""
    from kdbook.machinery.errors import BookError, format_error
    from kdbook.machinery.runfolder import RunFolderBusy

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    command = {
        "notebooks": _cmd_notebooks,
        "lab": _cmd_lab,
        "book": _cmd_book,
        "params": _cmd_params,
        "sweep": _cmd_sweep,
        "doctor": _cmd_doctor,
        "bench": _cmd_bench,
        "train": _cmd_train,
        "data": _cmd_data,
        "html": _cmd_html,
    }[args.command]
    try:
        return command(args)
    except BookError:
        return 1  # run_book already printed the one-line FAILED report
    except RunFolderBusy as exc:  # another process writes the folder
        print(f"kdbook: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # bad input: a value, a missing data path
        print(f"kdbook: error: {format_error(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. --out names a file, disk full
        print(f"kdbook: error: {format_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kdbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
