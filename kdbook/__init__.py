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


def check_version(book_version: str) -> None:
    """Print this kdbook's version and where it was imported from, with a note when it is
    not ``book_version``, the version a notebook belongs to (every notebook's import-check
    cell calls it: :func:`kdbook.machinery.installed.import_check_source`).

    >>> check_version(__version__)  # doctest: +ELLIPSIS
    kdbook ... (...__init__.py)
    """
    print(f"kdbook {__version__} ({__file__})")
    if __version__ != book_version:
        print(
            f"note: this notebook belongs to kdbook {book_version}; "
            "`kdbook notebooks DIR` copies the installed version's notebooks"
        )
