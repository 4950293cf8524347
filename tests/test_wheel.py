"""The wheel as a new user gets it: built, installed into a fresh venv outside the repository,
the book copied out, one notebook run by the installed `kdbook book` and checked by nbval.

Nothing here reads the repository's tree after the build: every command runs from a
temporary folder with a clean environment (no PYTHONPATH), and the test checks that the
executed notebook came from the venv's kdbook. One venv per test session. torch, torchvision
and their CUDA libraries (5 GB) are not copied a second time: the venv sees this
interpreter's copies through a folder of links (`_link_torch`), as a user who already has
torch would, and pip checks them against the pinned pair in pyproject.toml and installs the
rest of the wheel's dependencies from its cache. A few minutes; `pytest -m "not wheel"`
leaves it out during development, `make test` runs it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

import kdbook

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "04_loss"


@dataclasses.dataclass
class Installed:
    wheel: Path
    venv: Path
    scratch: Path
    env: dict[str, str]
    timings: dict[str, float]

    def run(
        self, *args: str, cwd: Path, timeout: float = 900, label: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command of the venv (``kdbook``, ``python``) from ``cwd``; its seconds are
        kept in :attr:`timings` under ``label`` (default: the command's first words)."""
        t0 = time.monotonic()
        done = subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.timings[label or " ".join(args[:3])] = round(time.monotonic() - t0, 1)
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n" + (
            done.stdout[-3000:] + done.stderr[-3000:]
        )
        return done


def _pinned_torch() -> list[str]:
    """torch and torchvision as pyproject.toml pins them."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"^(torch|torchvision)==", d)]
    assert len(pins) == 2, f"pyproject.toml pins torch and torchvision, found {pins}"
    return pins


def _torch_distributions() -> list[importlib.metadata.Distribution]:
    """torch, torchvision, triton and the CUDA libraries they need, as installed here."""
    wanted = [
        d
        for d in importlib.metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith(("torch", "triton", "nvidia", "cuda"))
    ]
    names = {d.metadata["Name"].lower() for d in wanted}
    assert {"torch", "torchvision"} <= names, f"this interpreter lacks torch: {sorted(names)}"
    return wanted


def _link_torch(venv: Path, layer: Path) -> None:
    """Make this interpreter's torch stack importable in ``venv`` without copying it: a folder
    of symbolic links to each distribution's top-level entries (packages and ``.dist-info``),
    named by a ``.pth`` file in the venv's site-packages. pip sees the distributions as
    installed and never writes there (they lie outside the venv)."""
    layer.mkdir()
    for dist in _torch_distributions():
        for entry in {f.parts[0] for f in dist.files or []}:
            source = Path(str(dist.locate_file(entry)))
            if entry in {"..", "__pycache__"} or entry.endswith(".pth") or not source.exists():
                continue
            if not (layer / entry).exists():
                (layer / entry).symlink_to(source)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "kdbook-test-torch.pth").write_text(f"{layer}\n")


def _clean_env(scratch: Path, venv: Path) -> dict[str, str]:
    """This process's environment less what would point a command back at the repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith(("JUPYTER", "PYTEST"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        HOME=str(scratch / "home"),  # no user-level kernelspec or config of the developer's
        JUPYTER_PREFER_ENV_PATH="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR")
        or str(Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "pip"),
        MPLBACKEND="Agg",
    )
    (scratch / "home").mkdir(exist_ok=True)
    return env


def _build_wheel(dist: Path) -> Path:
    """``python -m build`` (sdist, then the wheel from it) where build is installed, else
    pip's PEP 517 build of the wheel."""
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=dist)
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = dist.glob("kdbook-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, built once and installed into one fresh venv for the session."""
    scratch = tmp_path_factory.mktemp("wheel")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    dist = scratch / "dist"
    dist.mkdir()
    wheel = _build_wheel(dist)
    timings["build"] = round(time.monotonic() - t0, 1)
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = Installed(wheel, venv, scratch, _clean_env(scratch, venv), timings)
    pip = ("python", "-m", "pip", "install", "--quiet", "--progress-bar", "off")
    _link_torch(venv, scratch / "torch-layer")
    installed.run(*pip, str(wheel), cwd=scratch, timeout=1200, label="pip install wheel")
    seen = installed.run(
        "python",
        "-c",
        "import torch, torchvision; print(torch.__file__); "
        "print(f'torch=={torch.__version__.split(\"+\")[0]}'); "
        "print(f'torchvision=={torchvision.__version__.split(\"+\")[0]}')",
        cwd=scratch,
        label="torch check",
    ).stdout.split()
    assert seen[1:] == _pinned_torch(), f"the venv has {seen[1:]}, pyproject pins {_pinned_torch()}"
    assert Path(seen[0]).is_relative_to(scratch / "torch-layer"), (
        f"pip installed a second torch ({seen[0]}) instead of taking the linked one"
    )
    return installed


def test_the_wheel_carries_the_book_and_the_static_files(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"kdbook/book/{notebook.name}" in names, f"{notebook.name} is not in the wheel"
    for static in sorted((ROOT / "kdbook" / "static").iterdir()):
        assert f"kdbook/static/{static.name}" in names, f"{static.name} is not in the wheel"


def test_a_new_user_copies_runs_and_checks_the_book_without_the_repository(
    installed: Installed,
) -> None:
    elsewhere = installed.scratch / "elsewhere"  # not the repository, not below it
    elsewhere.mkdir()
    book, out = installed.scratch / "x", installed.scratch / "y"
    site = installed.venv.resolve()

    version = installed.run("kdbook", "--version", cwd=elsewhere).stdout.strip()
    assert version == f"kdbook {kdbook.__version__}"
    where = installed.run(
        "python",
        "-c",
        "import kdbook, kdbook.machinery.installed as n; "
        "print(kdbook.__file__); print(n.book_dir())",
        cwd=elsewhere,
    ).stdout.split()
    assert all(Path(p).resolve().is_relative_to(site) for p in where), where

    installed.run("kdbook", "notebooks", str(book), cwd=elsewhere)
    assert sorted(p.name for p in book.glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")
    )

    installed.run(
        "kdbook", "book", "--only", NOTEBOOK, "--out", str(out), cwd=elsewhere, label="book"
    )
    executed = nbformat.read(str(out / f"{NOTEBOOK}.ipynb"), as_version=4)
    source = Path(executed.metadata["kdbook"]["source"]).resolve()
    assert source.is_relative_to(site), f"the book ran {source}, not the venv's notebook"
    assert Path(executed.metadata["papermill"]["input_path"]).resolve().is_relative_to(site)
    check = next(c for c in executed.cells if c.get("id") == "kdbook-import-check")
    printed = "".join(o.get("text", "") for o in check.outputs)
    match = re.search(r"^kdbook (\S+) \((.+)\)$", printed, re.M)
    assert match and match.group(1) == kdbook.__version__, printed
    assert Path(match.group(2)).resolve().is_relative_to(site), printed
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["versions"]["kdbook"] == kdbook.__version__
    assert (out / "html" / "index.html").is_file()

    installed.run(
        "python",
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",
        "-p",
        "no:cacheprovider",
        "-q",
        str(out / f"{NOTEBOOK}.ipynb"),
        cwd=elsewhere,
        label="nbval",
    )
    print(f"wheel test timings (s): {installed.timings}")
