"""Build hook: the book's notebooks travel in the wheel as package data.

``notebooks/`` at the top of the repository stays the one copy of the book in git. Building
the package (``pip install .``, ``python -m build``) copies ``notebooks/*.ipynb`` into the
built package as ``kdbook/book/``; an editable install (``pip install -e .``) copies nothing,
and ``kdbook.machinery.installed.book_dir()`` finds the repository's ``notebooks/`` instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
BOOK = Path("kdbook", "book")  # inside the built package


def book_files() -> list[Path]:
    """The notebooks and, when there, the references page they link."""
    pages = [p for p in [NOTEBOOKS / "references.md"] if p.is_file()]
    return sorted(NOTEBOOKS.glob("*.ipynb")) + pages


class BuildPyWithBook(build_py):
    """``build_py`` that also copies the notebooks into ``build_lib/kdbook/book/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable: the package reads the repository's notebooks/ itself
        notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
        if not notebooks:
            raise SystemExit(f"kdbook build: no notebooks in {NOTEBOOKS}: the wheel needs the book")
        target = Path(self.build_lib) / BOOK
        shutil.rmtree(target, ignore_errors=True)  # no notebook left from an earlier build
        target.mkdir(parents=True)
        for path in book_files():
            self.copy_file(str(path), str(target / path.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        book = Path(self.build_lib) / BOOK
        return outputs + [str(book / p.name) for p in book_files()]


setup(cmdclass={"build_py": BuildPyWithBook})
