"""The notebook contract (DESIGN.md), checked statically on the committed notebooks.

Executing them is `make test`'s job (papermill, then nbval on the executed copies).
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys

import nbformat
import papermill
import pytest

import kdbook
from kdbook.config import CPU_SIZES, Config, config_from, full_size_options
from kdbook.machinery.installed import IMPORT_CHECK_ID, book_dir, import_check_source
from kdbook.machinery.selection import list_notebooks

NOTEBOOK_DIR = book_dir()
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
    assert ast.literal_eval(declared["run_dir"]["default"]) == "runs/lab", (
        "run_dir defaults to runs/lab beside the notebook, wherever the book was copied"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_declares_the_data_and_thread_settings_and_says_how_to_ask_for_the_full_size(
    name: str,
) -> None:
    """`-p image_size` and `-p threads` reach every notebook through `kdbook book` (which
    refuses an undeclared name), and the first cell names the options that undo the
    imagefolder preset's CPU sizes (those the notebook declares)."""
    declared = papermill.inspect_notebook(NOTEBOOK_DIR / f"{name}.ipynb")
    assert {"preset", "dataset", "image_size", "threads"} <= declared.keys()
    names = [k for k in CPU_SIZES["imagefolder"] if k in declared]
    assert f"`{full_size_options('imagefolder', names)}` asks for the full size" in (
        read(name).cells[0].source
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_cell_after_the_parameters_checks_that_kdbook_imports(name: str) -> None:
    """One generated cell, the same in every notebook: restamp them all after a version
    change with ``python -c "import glob; from kdbook.machinery.installed import stamp_import_check;
    [stamp_import_check(p) for p in glob.glob('notebooks/*.ipynb')]"``."""
    nb = read(name)
    index = nb.cells.index(parameters_cell(nb))
    cell = nb.cells[index + 1]
    assert cell.get("id") == IMPORT_CHECK_ID, "the cell after the parameters cell"
    assert cell.source == import_check_source(kdbook.__version__), (
        f"{name}'s import check is not the one import_check_source "
        "(kdbook.machinery.installed) generates "
        f"for version {kdbook.__version__}: restamp it (see this test's docstring)"
    )


def test_the_import_check_says_how_to_install_without_installing(tmp_path) -> None:
    """Where kdbook does not import, the cell stops with one line: the %pip command and
    the book's version; it never installs anything itself. Where it does, it prints the
    version and where it was imported from (kdbook.check_version compares the versions)."""
    source = import_check_source("9.8.7")
    assert len(source.splitlines()) <= 5, "a try-import, one line to stop, one to check"
    assert "pip" not in source.replace("%pip install", "")  # only the advice, never a call
    code = "import sys\nsys.modules['kdbook'] = None\n" + source
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: kdbook is not installed in this kernel")
    assert "%pip install kdbook==9.8.7" in last and last.endswith("belongs to kdbook 9.8.7")
    assert "Traceback" in run.stderr and "During handling" not in run.stderr
    ok = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert ok.returncode == 0
    assert ok.stdout.startswith(f"kdbook {kdbook.__version__} (")
    assert "note: this notebook belongs to kdbook 9.8.7" in ok.stdout


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


def _device_misuses(source: str) -> list[str]:
    """What in a code cell could hand torch a device it does not accept ('auto'): the raw
    ``device`` parameter read instead of ``cfg.device``, or 'auto' written as a device."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id == "device" and isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: reads the parameter `device` (use cfg.device)")
        values = []
        if isinstance(node, ast.keyword) and node.arg in ("device", "map_location"):
            values = [node.value]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("to", "device"):
            values = list(node.args)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "device":
            values = list(node.args)
        for value in values:
            if isinstance(value, ast.Constant) and value.value == "auto":
                found.append(f"line {node.lineno}: 'auto' given as a device")
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_cell_can_pass_an_unresolved_device_to_torch(name: str) -> None:
    """Every cell's device is ``cfg.device``, which make_config resolved ('auto' never
    reaches a cell: tests/test_config.py checks that for every preset)."""
    nb = read(name)
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        assert not re.search(r"""device\s*=\s*["']auto["']""", cell.source), cell.id
        assert _device_misuses(cell.source) == [], f"cell {cell.id}"


def test_the_device_check_catches_what_it_is_for() -> None:
    assert _device_misuses("x.to(cfg.device)\nfit(m, d, device=cfg.device)") == []
    assert len(_device_misuses("x.to(device)")) == 1
    assert len(_device_misuses("x.to('auto')")) == 1
    assert len(_device_misuses("predict(m, d, 'test', device='auto')")) == 1
    assert len(_device_misuses("torch.device('auto')")) == 1
