"""The ``kdbook`` command: run the book headless and inspect its parameters.

:mod:`kdbook.cli.main` builds the parser and dispatches; each subcommand is one module
(``book``, ``sweep``, ``bench``, ``data``, ``train``, ``notebooks`` and ``lab``, ``params``,
``doctor``, ``html``); :mod:`kdbook.cli.common` holds the ``-p NAME=VALUE`` parsing they share.
"""

from __future__ import annotations

from kdbook.cli.common import parse_value
from kdbook.cli.main import build_parser, main
from kdbook.cli.sweep import parse_grid

__all__ = ["build_parser", "main", "parse_grid", "parse_value"]
