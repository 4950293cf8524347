"""The package's layout (DESIGN.md, "The kdbook package: three parts").

- No import circle among kdbook's modules. Every import counts: module-level ones and the
  function-local ones too (a local import only delays a circle to the first call), except
  those under ``if TYPE_CHECKING:`` (never run). Importing ``a.b.c`` also runs the packages
  ``a`` and ``a.b`` (their ``__init__``), so the import is an edge to them as well, unless
  the importer is inside that package (its ``__init__`` is already running).
- No module over 600 lines.
- No private (``_name``; dunders such as ``__version__`` are public) imported from another
  kdbook module.
- Every ``from kdbook... import ...`` and ``import kdbook...`` in the notebooks' code cells
  and the README's code blocks still works, from this tree.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kdbook"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def imported(importer: str, tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """(module, names, line) of every kdbook import in ``tree`` that runs."""
    skipped, found = type_checking_nodes(tree), []
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("kdbook")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the importer's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([module] if module else [])])
            if module.split(".")[0] == "kdbook":
                found.append((module, [a.name for a in node.names], node.lineno))
    return found


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in imported(name, ast.parse(path.read_text(encoding="utf-8"))):
            targets = {module} | {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
            for target in list(targets):
                targets |= {a for a in ancestors(target) if a not in ancestors(name) + [name]}
            graph[name] |= {t for t in targets if t in MODULES and t != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_no_import_circle() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_one() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_fits(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines"


def test_no_private_name_crosses_modules() -> None:
    crossing = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {n} from {module}"
        for name, path in MODULES.items()
        for module, names, line in imported(name, ast.parse(path.read_text(encoding="utf-8")))
        for n in names
        if n.startswith("_") and not n.endswith("__") and module != name
    ]
    assert not crossing, "\n".join(crossing)


# --------------------------------------------------------------------------- public imports

IMPORT = re.compile(
    r"^[ \t]*(?:from\s+(kdbook[\w.]*)\s+import\s+(\([^)]*\)|[^\n#]*)|import\s+(kdbook[\w.]*))",
    re.M,
)


def code_sources() -> list[tuple[str, str]]:
    sources = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        sources += [(nb.name, "".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sources += [("README.md", block) for block in re.findall(r"```[^\n]*\n(.*?)```", readme, re.S)]
    return sources


def public_imports() -> list[tuple[str, str, str]]:
    """(where, module, name or '') of every kdbook import in the notebooks and README."""
    found = set()
    for where, source in code_sources():
        for module, names, plain in IMPORT.findall(source):
            if plain:
                found.add((where, plain, ""))
                continue
            for part in re.sub(r"#[^\n]*", "", names).strip("()").split(","):
                if part.strip():
                    found.add((where, module, part.split(" as ")[0].strip()))
    return sorted(found)


PUBLIC = public_imports()


def test_public_imports_are_collected() -> None:
    modules = {m for _, m, _ in PUBLIC}
    assert {"kdbook.losses", "kdbook.train", "kdbook.report", "kdbook.doctor"} <= modules
    assert ("05_distillation.ipynb", "kdbook.train", "fit") in PUBLIC


@pytest.mark.parametrize(("where", "module", "name"), PUBLIC)
def test_public_import_works(where: str, module: str, name: str) -> None:
    mod = importlib.import_module(module)
    # an editable install elsewhere must not answer for a module this tree lacks
    assert Path(mod.__file__).resolve().is_relative_to(PACKAGE), f"{module} is {mod.__file__}"
    if name:
        assert hasattr(mod, name) or f"{module}.{name}" in MODULES, f"{where}: {module}.{name}"
