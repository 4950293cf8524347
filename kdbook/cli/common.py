"""What several subcommands share: ``-p NAME=VALUE`` parameters and their help."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any


def parse_value(text: str) -> Any:
    """Read a ``-p`` value like papermill's CLI: int, then float, then True/False/None,
    else the string itself; and a list written as one, ``"[0.3, 1.0]"`` or
    ``"['resnet8', 'resnet20']"``, as that list."""
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(
                f"-p value {text!r} is not a list kdbook can read; accepted: a Python list of "
                "numbers or quoted names, e.g. \"[0.3, 1.0]\" or \"['resnet8', 'resnet20']\""
            ) from None
        return list(value)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def add_parameter_option(parser: argparse.ArgumentParser, help: str) -> None:
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


def train_parameters_help() -> str:
    """The ``-p`` parameters of ``kdbook train``, from their one declaration (kdbook.config)."""
    from kdbook.config import TRAIN_FIELDS, describe

    lines = "\n".join(f"  {line}" for line in describe(TRAIN_FIELDS))
    return f"\nparameters (-p NAME VALUE; None means the preset's):\n{lines}\n"


def show(path: Path) -> str:
    """A path relative to the current directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
