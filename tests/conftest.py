"""Fixtures: tiny notebooks written with nbformat, run for real by papermill."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

NotebookFactory = Callable[..., Path]


def write_notebook(path: Path, parameters: str | None, *cells: str) -> Path:
    """Write a python3 notebook: a markdown title, a ``parameters`` cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem}"))
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    """An empty folder for fixture notebooks."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    return folder


@pytest.fixture
def make_notebook(notebook_dir: Path) -> NotebookFactory:
    """``make_notebook("01_x", parameters_source, *cell_sources)`` writes one notebook."""

    def make(name: str, parameters: str | None, *cells: str) -> Path:
        return write_notebook(notebook_dir / f"{name}.ipynb", parameters, *cells)

    return make


@pytest.fixture(scope="session")
def digits():
    """The embedded digits data set, loaded once for the unit tests of the core package."""
    from kdbook.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's small CPU models on one intra-op thread, then restore the setting.

    The models here are tiny: a second thread gains nothing, and on a busy 2-core machine
    the two threads wait on each other (the same tests ran 3x slower with the default).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def teacher(digits):
    """A digits teacher (BatchNorm and dropout) trained for one epoch: enough to distil from.

    Shared by the whole session: fit puts a teacher in eval mode and never changes its
    weights (test_train checks that), so one training serves every module.
    """
    import torch
    from helpers import tiny

    from kdbook.train import fit

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights whichever module asks first
    try:
        model = tiny(digits, name="digits_teacher")
        fit(model, digits, num_epochs=1, lr=0.05, progress=False)
    finally:
        torch.set_num_threads(before)
    return model
