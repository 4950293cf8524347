"""The environment check behind ``kdbook doctor``: versions, the book, device, kernel, data sets.

:func:`environment_report` returns one :class:`EnvCheck` row per check, each with what to
do about a problem; :func:`format_report` prints them as aligned columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
REPORTED_PACKAGES = (
    "torch",
    "torchvision",
    "papermill",
    "nbval",
    "ipywidgets",
    "jupyterlab",
    "ipykernel",
)


@dataclass
class EnvCheck:
    """One line of :func:`environment_report`."""

    name: str
    status: str  # ok, warn, FAIL (something required is broken) or info
    found: str
    action: str = ""  # what to do about it; empty when nothing


def _pins() -> dict[str, str]:
    """Exact pins (``name==version``) in kdbook's own dependencies."""
    import importlib.metadata
    import re

    try:
        requires = importlib.metadata.requires("kdbook") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    pins = {}
    for req in requires:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", req.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def _package_checks() -> list[EnvCheck]:
    import importlib.metadata
    import platform
    import sys

    rows = [
        EnvCheck(
            "python",
            OK if sys.version_info >= (3, 11) else FAIL,
            f"{platform.python_version()} ({sys.executable})",
            "" if sys.version_info >= (3, 11) else "kdbook needs Python 3.11 or newer",
        )
    ]
    pins = _pins()
    for name in REPORTED_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            rows.append(
                EnvCheck(name, FAIL, "not installed", "run `make venv` (or pip install -e .)")
            )
            continue
        pin = pins.get(name)
        if pin and version != pin:
            rows.append(
                EnvCheck(
                    name,
                    WARN,
                    version,
                    f"the book is tested with {name}=={pin}; run `make venv` to match",
                )
            )
        else:
            rows.append(EnvCheck(name, OK, version))
    return rows


def _device_checks() -> list[EnvCheck]:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        bf16 = torch.cuda.is_bf16_supported()
        return [
            EnvCheck("device", OK, f"CUDA: {torch.cuda.device_count()} x {name}"),
            EnvCheck(
                "bf16",
                OK if bf16 else INFO,
                "supported" if bf16 else "not supported",
                "" if bf16 else "use float16 autocast with torch.amp.GradScaler",
            ),
        ]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return [EnvCheck("device", OK, "Apple MPS (no CUDA)", "pass -p device mps")]
    return [
        EnvCheck(
            "device",
            INFO,
            f"CPU only (torch threads: {torch.get_num_threads()})",
            "fine for the classroom and glyphs presets; the cifar10 preset wants a CUDA GPU",
        )
    ]


def _kernel_check() -> EnvCheck:
    import shutil
    import sys
    from pathlib import Path

    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return EnvCheck("kernel python3", FAIL, "jupyter_client missing", "run `make venv`")
    fix = f"{sys.executable} -m ipykernel install --sys-prefix --name python3"
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return EnvCheck("kernel python3", FAIL, "no kernelspec named python3", f"run `{fix}`")
    program = spec.argv[0] if spec.argv else ""
    resolved = shutil.which(program) or program
    if resolved and Path(resolved).resolve() == Path(sys.executable).resolve():
        return EnvCheck("kernel python3", OK, f"{program} (this interpreter)")
    return EnvCheck(
        "kernel python3",
        FAIL,
        f"{program or '?'} (not this interpreter, {sys.executable})",
        f"papermill would run the notebooks elsewhere; run `{fix}`",
    )


def _imagefolder_trees(root) -> list[str]:
    """Folders under ``root`` (two levels deep) that hold train/, val/ and test/."""
    if not root.is_dir():
        return []
    candidates = [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates for q in p.iterdir() if q.is_dir()]
    return sorted(
        str(p.relative_to(root.parent))
        for p in candidates
        if all((p / split).is_dir() for split in ("train", "val", "test"))
    )


def _data_checks(root: str = "data") -> list[EnvCheck]:
    from kdbook.data import check_available, resolve_path

    rows = []
    try:
        from sklearn.datasets import load_digits

        count = len(load_digits().target)
        rows.append(EnvCheck("data digits", OK, f"{count} images (embedded)"))
    except Exception as e:  # a broken scikit-learn install can raise anything
        rows.append(EnvCheck("data digits", FAIL, f"{type(e).__name__}: {e}", "run `make venv`"))
    rows.append(_glyphs_check(root))
    try:
        check_available("cifar10", root)
        rows.append(EnvCheck("data cifar10", OK, f"found in {resolve_path(root)}"))
    except FileNotFoundError as e:
        rows.append(EnvCheck("data cifar10", INFO, "not found (optional)", str(e)))
    trees = _imagefolder_trees(resolve_path(root))
    rows.append(
        EnvCheck(
            "data imagefolder",
            OK if trees else INFO,
            ", ".join(f"imagefolder:{t}" for t in trees) or "none (optional)",
            "" if trees else f"place a train/ val/ test/ <class>/ tree under {root}/",
        )
    )
    return rows


def _glyphs_check(root: str = "data") -> EnvCheck:
    """The glyphs data set: matplotlib's fonts it is drawn from, and whether it is kept yet."""
    from kdbook.data import resolve_path
    from kdbook.glyphs import SPLIT_FONTS, cache_path, font_folder, missing_fonts

    missing = missing_fonts()
    if missing:
        return EnvCheck(
            "data glyphs",
            FAIL,
            f"{len(missing)} font files missing from {font_folder()}: {', '.join(missing)}",
            "reinstall matplotlib (`make venv`); the glyphs are drawn from its fonts",
        )
    faces = sum(len(fonts) for fonts in SPLIT_FONTS.values())
    path = cache_path(resolve_path(root))
    kept = f"kept in {path.parent}" if path.is_file() else "made on first use, in about a second"
    return EnvCheck(
        "data glyphs", OK, f"drawn from {faces} faces of matplotlib's fonts (no download), {kept}"
    )


def _book_check() -> EnvCheck:
    """Which kdbook this is and where its notebooks are (the wheel's, or a clone's)."""
    from kdbook import __version__
    from kdbook.machinery.installed import book_notebooks

    try:
        notebooks = book_notebooks()
    except FileNotFoundError as exc:
        return EnvCheck("kdbook book", FAIL, f"{__version__}, no notebooks", str(exc))
    return EnvCheck(
        "kdbook book",
        OK,
        f"{__version__}, {len(notebooks)} notebooks in {notebooks[0].parent}",
        "",
    )


def environment_report(data_root: str = "data") -> list[EnvCheck]:
    """What ``kdbook doctor`` checks: versions, device, the notebook kernel, the data sets.

    Each row has a status (ok, warn, FAIL when something the book needs is broken, info)
    and what to do about it.
    """
    return [
        *_package_checks(),
        _book_check(),
        *_device_checks(),
        _kernel_check(),
        *_data_checks(data_root),
    ]


def format_report(rows: Sequence[EnvCheck]) -> str:
    """The report as a plain-text table, one line per check."""
    header = ("check", "status", "found", "what to do")
    table = [header, *[(r.name, r.status, r.found, r.action) for r in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:3], widths, strict=True))
        + ("  " + line[3] if line[3] else "")
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[3]))
    return "\n".join(line.rstrip() for line in lines)
