"""The ``kdbook`` command: run the book headless and inspect its parameters."""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAIN_EPILOG = """\
examples:
  kdbook book                                   run every notebook into runs/<timestamp>/
  kdbook book --out runs/ci                     ... into a folder of your choice
  kdbook book --only 04_loss -p temperature 2.0 --out runs/t2
  kdbook book -p preset cifar10                 CIFAR-10 sizes (data in data/, see data/README.md)
  kdbook params                                 the parameters every notebook declares
  kdbook params 05_distillation

Run `kdbook COMMAND --help` for the options of one command.
"""

BOOK_EPILOG = """\
examples:
  kdbook book --out runs/ci
  kdbook book --only 04_loss -p temperature 2.0 --out runs/t2
  kdbook book --only 02 03 -p preset cifar10 -p device cuda
  kdbook book -p dataset imagefolder:data/chest_xray -p preset imagefolder

Values of -p are read like papermill's: an integer, else a float, else True/False/None,
else a string. Each notebook receives only the parameters its parameters cell declares,
plus run_dir (the run folder). The run folder gets the executed notebooks, results.json,
summary.md, metrics/ and figures/. Exit status: 0 ok, 1 a notebook failed, 2 bad input.
"""

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
        help="run only these notebooks (name such as 04_loss, or a unique prefix such as 04)",
    )
    book.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        dest="parameters",
        help="set a notebook parameter; repeat for several",
    )
    book.add_argument(
        "--timeout",
        type=int,
        default=900,
        metavar="SECONDS",
        help="seconds allowed per cell (default: 900)",
    )

    params = sub.add_parser(
        "params",
        help="list the parameters each notebook declares",
        description="List the parameters declared in each notebook's parameters cell: "
        "name, type, default and comment.",
        epilog=PARAMS_EPILOG,
        formatter_class=fmt,
    )
    params.add_argument("notebook", nargs="?", metavar="NOTEBOOK", help="one notebook only")
    return parser


def _cmd_book(args: argparse.Namespace) -> int:
    from kdbook.book import run_book

    params = {name: parse_value(value) for name, value in args.parameters}
    run_dir = run_book(out=args.out, only=args.only, params=params, timeout=args.timeout)
    print(f"run folder: {_show(run_dir)}")
    print(f"summary:    {_show(run_dir / 'summary.md')}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from kdbook.book import list_notebooks, notebook_parameters, resolve_notebooks

    names = resolve_notebooks([args.notebook] if args.notebook else None, list_notebooks())
    if not names:
        raise ValueError("no notebooks found")
    for i, name in enumerate(names):
        if i:
            print()
        print(name)
        declared = notebook_parameters(name)
        if not declared:
            print("  (no parameters cell)")
        for p in declared.values():
            line = f"  {p['name']}: {_type_name(p)} = {p.get('default')}"
            if p.get("help"):
                line += f"  # {p['help']}"
            print(line)
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
    from kdbook.book import BookError, format_error

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    command = {"book": _cmd_book, "params": _cmd_params}[args.command]
    try:
        return command(args)
    except BookError:
        return 1  # run_book already printed the one-line FAILED report
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
