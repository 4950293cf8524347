"""``kdbook params``: the parameters a notebook declares."""

from __future__ import annotations

import argparse
import ast
from typing import Any

PARAMS_EPILOG = """\
examples:
  kdbook params                 every notebook
  kdbook params 04_loss         one notebook (a unique prefix such as 04 works too)
"""


def add_params(sub: Any, fmt: type) -> None:
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


def cmd_params(args: argparse.Namespace) -> int:
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


def _type_name(param: dict[str, Any]) -> str:
    """The annotated type, else the type of the default literal (``4.0`` -> ``float``)."""
    annotated = param.get("inferred_type_name")
    if annotated and annotated != "None":
        return str(annotated)
    try:
        return type(ast.literal_eval(str(param.get("default")))).__name__
    except (ValueError, SyntaxError):
        return "?"
