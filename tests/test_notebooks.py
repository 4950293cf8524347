"""The notebook contract (DESIGN.md), checked statically on the committed notebooks.

Executing them is `make test`'s job (papermill, then nbval on the executed copies).
"""

from __future__ import annotations

import ast
import dataclasses
import re

import nbformat
import papermill
import pytest

from kdbook.config import Config, config_from
from kdbook.runner import NOTEBOOK_DIR, list_notebooks

NOTEBOOKS = list_notebooks()
SHARED = {f.name for f in dataclasses.fields(Config)}


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def test_the_core_chapters_exist() -> None:
    core = ["01_data", "02_teacher", "03_student", "04_loss", "05_distillation", "06_evaluation"]
    assert [n for n in NOTEBOOKS if n in core] == core


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_cell_is_a_title_with_goals_and_time(name: str) -> None:
    first = read(name).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# "), "the first cell starts with the title"
    assert re.search(r"learn", first.source, re.I), "says what you will learn"
    assert re.search(r"CPU", first.source), "says how long it takes on a CPU"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_comes_first_and_papermill_parses_every_line(name: str) -> None:
    nb = read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    cell = parameters_cell(nb)
    assert code[0] is cell, "the first code cell is the parameters cell"
    lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
    declared = papermill.inspect_notebook(NOTEBOOK_DIR / f"{name}.ipynb")
    assert len(declared) == len(lines), (
        f"papermill parsed {sorted(declared)} out of {len(lines)} lines: "
        "write each as `name: type = literal  # comment` (no `|` in types, no `=` in comments)"
    )
    for p in declared.values():
        assert p["help"], f"parameter {p['name']} has no comment"
        assert p["inferred_type_name"] != "None", f"parameter {p['name']} has no type"
    assert {"preset", "seed", "run_dir"} <= declared.keys()


def test_shared_parameters_have_one_type_everywhere() -> None:
    """A shared name means one thing; a heavy notebook may lower a default (say why)."""
    seen: dict[str, tuple[str, str]] = {}
    for name in NOTEBOOKS:
        for p in papermill.inspect_notebook(NOTEBOOK_DIR / f"{name}.ipynb").values():
            if p["name"] not in SHARED:
                continue
            first = seen.setdefault(p["name"], (p["inferred_type_name"], name))
            assert first[0] == p["inferred_type_name"], (
                f"{p['name']} is {p['inferred_type_name']} in {name} but {first[0]} in {first[1]}"
            )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_clean(name: str) -> None:
    nb = read(name)
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), "every cell has a unique id"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"cell {cell.id} was committed with outputs"
            assert cell.execution_count is None, f"cell {cell.id} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"
    source = "\n".join(c.source for c in nb.cells)
    assert "warnings.filterwarnings" not in source, "let the reader see warnings"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_reports_its_metrics_and_ends_with_exercises(name: str) -> None:
    nb = read(name)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'"{name}"' in source and "save_metrics(" in source, "calls save_metrics(..., name)"
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.startswith("## Summary") for h in headings)
    assert any(h.startswith("## Exercises") for h in headings)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_config_cell_passes_every_declared_parameter(name: str) -> None:
    """The shared parameters all reach the Config (notebook-specific ones are used directly)."""
    nb = read(name)
    declared = papermill.inspect_notebook(NOTEBOOK_DIR / f"{name}.ipynb")
    config = next(c for c in nb.cells if c.cell_type == "code" and "config_from(" in c.source)
    assert re.search(r"^cfg = config_from\(globals\(\)\)$", config.source, re.M), (
        "the config cell builds cfg = config_from(globals()) from the parameters cell"
    )
    defaults = {p: ast.literal_eval(v["default"]) for p, v in declared.items()}
    cfg = config_from(defaults)  # what the config cell computes from the declared values
    for param, value in defaults.items():
        if param in SHARED and value is not None:
            assert getattr(cfg, param) == value, f"config_from(...) does not receive {param}"
