"""``kdbook data``: load (or download) a data set and say what it holds."""

from __future__ import annotations

import argparse
from typing import Any

DATA_EPILOG = """\
examples:
  kdbook data                                   digits and cifar10
  kdbook data glyphs                            characters drawn from matplotlib's fonts
  kdbook data imagefolder:data/chest_xray       your own train/ val/ test/ <class>/ tree

Exit status: 0 every data set loaded, 1 one is not in place or not readable (the line says
what to do), 2 bad input.
"""


def add_data(sub: Any, fmt: type) -> None:
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
        help="digits, glyphs, cifar10 or imagefolder:PATH (default: digits and cifar10)",
    )
    data.add_argument("--root", default="data", help="the data folder (default: data)")


def cmd_data(args: argparse.Namespace) -> int:
    from kdbook.config import check_dataset_spec, dataset_note
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
        if (note := dataset_note(spec)) is not None:
            print(f"{spec}: {note}")
    return 1 if failed else 0
