"""kdbook: the helper package of a hands-on knowledge distillation workbook.

Importing it changes no global state; the notebooks import the modules they need,
e.g. ``from kdbook.losses import kd_loss``. ``kdbook.machinery.installed.book_dir()`` says where the
book's notebooks are installed.
"""

from __future__ import annotations

from pathlib import Path


def _version() -> str:
    """The version in pyproject.toml: read from it in a source tree (a clone, an editable
    install), else from the installed package's metadata."""
    import importlib.metadata
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, ValueError):
            project = {}
        if project.get("name") == "kdbook" and project.get("version"):
            return str(project["version"])
    try:
        return importlib.metadata.version("kdbook")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__: str = _version()
