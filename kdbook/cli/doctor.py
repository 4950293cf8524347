"""``kdbook doctor``: the machine check (:mod:`kdbook.environment`), not the KD-mistake
detectors of :mod:`kdbook.doctor`.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_doctor(sub: Any, fmt: type) -> None:
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from kdbook.environment import FAIL, environment_report, format_report

    rows = environment_report(args.data)
    print(format_report(rows))
    broken = [r.name for r in rows if r.status == FAIL]
    if broken:
        print(f"\nbroken: {', '.join(broken)} (see 'what to do')")
        return 1
    return 0
