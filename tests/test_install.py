"""The book as an installed package: where it is, `kdbook notebooks`, `kdbook lab`, notebooks
given by path to `kdbook book` and `kdbook sweep`, and the version.

The real install (a wheel in a fresh venv, run from outside the repository) is
tests/test_wheel.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook

import kdbook
import kdbook.machinery.selection
from kdbook.cli import main
from kdbook.io import read_json
from kdbook.machinery.installed import (
    MANIFEST,
    REFERENCES,
    book_dir,
    book_notebooks,
    copy_notebooks,
    lab_command,
)
from kdbook.machinery.runner import run_book, select_notebooks

ROOT = Path(__file__).resolve().parent.parent

PARAMS = """\
temperature: float = 4.0  # softening temperature
run_dir: str = "runs/lab"  # the run folder
"""

REPORT = """\
import os
from kdbook.report import save_metrics
save_metrics(run_dir, "01_first", {"source": SOURCE, "cwd": os.getcwd(),
             "per_seed": [{"seed": 0, "kd_accuracy": temperature}]})
"""


def test_the_book_is_the_repositorys_notebooks_in_a_clone() -> None:
    assert book_dir() == ROOT / "notebooks"
    names = [p.name for p in book_notebooks()]
    assert names == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(names) >= 12 and names[0] == "01_data.ipynb"


def test_the_version_is_pyprojects(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert kdbook.__version__ == version
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdbook {version}"


def _edit(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[0].source += "\n\nMy notes."
    nbformat.write(nb, str(path))


def test_notebooks_copies_a_fresh_set_and_never_overwrites_an_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mybook"
    assert main(["notebooks", str(folder)]) == 0
    copies = sorted(folder.glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in book_notebooks()]
    for path in copies:
        nb = nbformat.read(str(path), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "copied:" in capsys.readouterr().out

    # a second copy changes nothing; an edited notebook is kept and named, with the way out
    _edit(folder / "04_loss.ipynb")
    edited = (folder / "04_loss.ipynb").read_bytes()
    assert main(["notebooks", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "kept your edited 04_loss.ipynb" in err and f"kdbook notebooks {folder} --force" in err
    assert (folder / "04_loss.ipynb").read_bytes() == edited

    # --force replaces it with the fresh copy
    assert main(["notebooks", str(folder), "--force"]) == 0
    assert "replaced (--force): 04_loss.ipynb" in capsys.readouterr().out
    assert (folder / "04_loss.ipynb").read_bytes() != edited
    assert copy_notebooks(folder).unchanged == [p.name for p in copies] + [REFERENCES]
    assert (folder / REFERENCES).read_bytes() == (book_dir() / REFERENCES).read_bytes()


def test_an_untouched_copy_of_an_older_book_is_brought_up_to_date(tmp_path: Path) -> None:
    folder = tmp_path / "mybook"
    copy_notebooks(folder)
    old = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
    (folder / "01_data.ipynb").write_bytes(old)  # what an older kdbook copied ...
    manifest = read_json(folder / MANIFEST)
    manifest["notebooks"]["01_data.ipynb"] = __import__("hashlib").sha256(old).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(manifest))  # ... and recorded
    (folder / "02_teacher.ipynb").unlink()
    report = copy_notebooks(folder)
    assert report.updated == ["01_data.ipynb"] and report.copied == ["02_teacher.ipynb"]
    assert not report.kept


def test_notebooks_rejects_a_file_and_the_book_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["notebooks", str(tmp_path / "file")]) == 2
    assert "folder must be a directory" in capsys.readouterr().err
    assert main(["notebooks", str(book_dir())]) == 2
    assert "must not be the installed book itself" in capsys.readouterr().err


def test_lab_copies_the_book_when_missing_then_opens_jupyterlab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    folder = tmp_path / "lab"
    assert main(["lab", str(folder)]) == 0
    assert (folder / "04_loss.ipynb").is_file()
    assert calls == [lab_command(folder)]
    assert calls[0][:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={folder}" in calls[0]
    _edit(folder / "04_loss.ipynb")
    edited = (folder / "04_loss.ipynb").read_bytes()
    assert main(["lab", str(folder)]) == 0  # a folder with notebooks is opened as it is
    assert (folder / "04_loss.ipynb").read_bytes() == edited


@pytest.fixture
def book_and_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A one-notebook book (the runner's default) and an edited copy of it elsewhere."""
    book = write_notebook(
        tmp_path / "book" / "01_first.ipynb", PARAMS, 'SOURCE = "book"', REPORT
    ).parent
    copy = write_notebook(
        tmp_path / "mine" / "01_first.ipynb", PARAMS, 'SOURCE = "copy"', REPORT
    ).parent
    monkeypatch.setattr(kdbook.machinery.selection, "NOTEBOOK_DIR", book)
    monkeypatch.chdir(tmp_path)
    return book, copy


def test_select_notebooks_takes_names_and_paths(book_and_copy: tuple[Path, Path]) -> None:
    book, copy = book_and_copy
    assert select_notebooks(["01"]) == {"01_first": book / "01_first.ipynb"}
    assert select_notebooks(["book/01_first.ipynb"]) == {"01_first": book / "01_first.ipynb"}
    assert select_notebooks(["mine/01_first.ipynb"]) == {"01_first": copy / "01_first.ipynb"}
    with pytest.raises(ValueError, match=r"^notebook 'mine/02_x.ipynb' is not a notebook file"):
        select_notebooks(["mine/02_x.ipynb"])
    with pytest.raises(ValueError, match="given twice, as the book's and as"):
        select_notebooks(["01", "mine/01_first.ipynb"])
    with pytest.raises(ValueError, match=r"unknown notebook '05'.*or give a notebook file's"):
        select_notebooks(["05"])


def test_book_and_sweep_run_an_edited_copy_given_by_path(
    book_and_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, copy = book_and_copy
    assert main(["book", "--only", "mine/01_first.ipynb", "--out", "run"]) == 0
    metrics = read_json(tmp_path / "run" / "metrics" / "01_first.json")
    assert metrics["source"] == "copy" and metrics["cwd"] == str(copy.resolve())
    executed = nbformat.read(str(tmp_path / "run" / "01_first.ipynb"), as_version=4)
    assert executed.metadata["kdbook"] == {
        "version": kdbook.__version__,
        "source": str((copy / "01_first.ipynb").resolve()),
    }
    assert read_json(tmp_path / "run" / "results.json")["versions"]["kdbook"] == (
        kdbook.__version__
    )

    args = ["sweep", "mine/01_first.ipynb", "--grid", "temperature=1,2", "--out", "sweep"]
    assert main(args) == 0
    assert "2 points ok, 0 failed" in capsys.readouterr().out
    point = read_json(tmp_path / "sweep" / "runs" / "temperature-1" / "metrics" / "01_first.json")
    assert point["source"] == "copy"


def test_run_book_defaults_to_the_installed_book(book_and_copy, tmp_path: Path) -> None:
    run_book(out=tmp_path / "run")
    assert read_json(tmp_path / "run" / "metrics" / "01_first.json")["source"] == "book"


CORE_WIDGETS = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}


def _widget_tree(widget) -> list:
    """``widget``, its layout and style, and the same for its children, recursively."""
    found = [widget]
    for part in ("layout", "style"):
        if getattr(widget, part, None) is not None:
            found.append(getattr(widget, part))
    for child in getattr(widget, "children", ()):
        found += _widget_tree(child)
    return found


def test_the_sliders_are_core_ipywidgets_8_only() -> None:
    """No custom front-end extension: what JupyterLab, Notebook 7 and VS Code render alike."""
    import ipywidgets
    import pandas as pd
    import torch

    from kdbook import widgets

    assert int(ipywidgets.__version__.split(".")[0]) >= 8
    g = torch.Generator().manual_seed(0)
    teacher, student = 4 * torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    targets = torch.randint(0, 10, (8,), generator=g)
    table = pd.DataFrame(
        [
            {"temperature": t, "alpha": a, "seed": s, "scratch_accuracy": 80.0 + s}
            | {"kd_accuracy": 81.0 + s + t * a}
            for t in (1.0, 4.0)
            for a in (0.5, 0.9)
            for s in range(2)
        ]
    )
    classes = [str(i) for i in range(10)]
    boxes = [
        widgets.temperature_explorer(teacher[:2], classes, student_logits=student[:2]),
        widgets.loss_explorer(student, teacher, targets),
        widgets.sweep_explorer(table),
    ]
    for box in boxes:
        for widget in _widget_tree(box):
            assert widget._model_module in CORE_WIDGETS, type(widget).__name__
            assert widget._view_module in CORE_WIDGETS | {None}, type(widget).__name__
    book = "\n".join(p.read_text() for p in book_notebooks())
    for extension in ("%matplotlib widget", "%matplotlib ipympl", "ipympl", "anywidget"):
        assert extension not in book, f"a notebook needs {extension}, a front-end extension"
