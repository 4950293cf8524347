"""The ``kdbook`` command: its parser and :func:`main`.

Each subcommand is one module of :mod:`kdbook.cli` holding its argparse declaration and
examples (``add_*``) and its thin handler (``cmd_*``); the work itself lives in the modules
they call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kdbook.cli.bench import add_bench, cmd_bench
from kdbook.cli.book import add_book, cmd_book
from kdbook.cli.data import add_data, cmd_data
from kdbook.cli.doctor import add_doctor, cmd_doctor
from kdbook.cli.html import add_html, cmd_html
from kdbook.cli.notebooks import add_lab, add_notebooks, cmd_lab, cmd_notebooks
from kdbook.cli.params import add_params, cmd_params
from kdbook.cli.sweep import add_sweep, cmd_sweep
from kdbook.cli.train import add_train, cmd_train

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

    add_notebooks(sub, fmt)
    add_lab(sub, fmt)
    add_book(sub, fmt)
    add_params(sub, fmt)
    add_doctor(sub, fmt)
    add_sweep(sub, fmt)
    add_html(sub, fmt)
    add_data(sub, fmt)
    add_train(sub, fmt)
    add_bench(sub, fmt)
    return parser


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
        "notebooks": cmd_notebooks,
        "lab": cmd_lab,
        "book": cmd_book,
        "params": cmd_params,
        "sweep": cmd_sweep,
        "doctor": cmd_doctor,
        "bench": cmd_bench,
        "train": cmd_train,
        "data": cmd_data,
        "html": cmd_html,
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
