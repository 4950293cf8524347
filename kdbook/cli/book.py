"""``kdbook book``: run the notebooks into one run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdbook.cli.common import add_parameter_option, parse_value, show

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


def add_book(sub: Any, fmt: type) -> None:
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
    add_parameter_option(book, "set a notebook parameter; repeat for several")
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


def cmd_book(args: argparse.Namespace) -> int:
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
    print(f"run folder: {show(run_dir)}")
    print(f"summary:    {show(run_dir / 'summary.md')}")
    print(f"html book:  {show(run_dir / 'html' / 'index.html')}")
    return 0
