"""``kdbook notebooks`` and ``kdbook lab``: copy the book's notebooks, open them in JupyterLab."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kdbook.cli.common import show

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


def add_notebooks(sub: Any, fmt: type) -> None:
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


def add_lab(sub: Any, fmt: type) -> None:
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


def cmd_notebooks(args: argparse.Namespace) -> int:
    from kdbook.machinery.installed import copy_notebooks

    report = copy_notebooks(args.folder, force=args.force)
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("kept") else sys.stdout)
    print(f"book folder: {show(Path(args.folder))} (open it: kdbook lab {args.folder})")
    return 1 if report.kept else 0


def cmd_lab(args: argparse.Namespace) -> int:
    import subprocess

    from kdbook.machinery.installed import copy_notebooks, lab_command

    folder = Path(args.folder)
    if not (folder.is_dir() and any(folder.glob("*.ipynb"))):
        report = copy_notebooks(folder)
        print(f"copied the book into {show(folder)}: {len(report.copied)} notebooks")
    return subprocess.call(lab_command(folder))
