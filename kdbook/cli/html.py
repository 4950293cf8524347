"""``kdbook html``: a run folder's book as static HTML."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdbook.cli.common import show


def add_html(sub: Any, fmt: type) -> None:
    """`kdbook html`: render a run folder as HTML again."""
    html = sub.add_parser(
        "html",
        help="render a run folder's executed notebooks as a static HTML book again",
        description="Write RUN/html/ (index.html and one page per executed notebook, "
        "widgets included, nothing loaded from a network). kdbook book does it at the end "
        "of every run; this renders a run folder again.",
    )
    html.add_argument("run", metavar="RUN", help="a run folder written by kdbook book")


def cmd_html(args: argparse.Namespace) -> int:
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
    print(f"html: {show(render_html(run))}")
    return 0
