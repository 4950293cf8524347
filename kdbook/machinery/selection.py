"""Which notebooks a run executes and with which parameters, checked before any work.

The notebooks are the installed book's (:func:`kdbook.machinery.installed.book_dir`; a test
may set ``NOTEBOOK_DIR`` here to point elsewhere) or any notebook file given by its path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdbook.machinery.installed import book_dir


def __getattr__(name: str) -> Any:
    """``NOTEBOOK_DIR``: the installed book's folder (:func:`kdbook.machinery.installed.book_dir`),
    looked up when asked; a test may set the attribute to point the runner elsewhere."""
    if name == "NOTEBOOK_DIR":
        return book_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _notebook_dir(notebook_dir: str | Path | None) -> Path:
    if notebook_dir is not None:
        return Path(notebook_dir)
    override = globals().get("NOTEBOOK_DIR")
    return Path(override) if override is not None else book_dir()


def list_notebooks(notebook_dir: str | Path | None = None) -> list[str]:
    """Return the notebook names (file stems such as ``"01_data"``) in ``notebook_dir``
    (default: the installed book, :func:`kdbook.machinery.installed.book_dir`), sorted."""
    folder = _notebook_dir(notebook_dir)
    return sorted(p.stem for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def notebook_parameters(
    name: str | Path, notebook_dir: str | Path | None = None
) -> dict[str, dict]:
    """Return the parameters declared in a notebook's ``parameters`` cell.

    Args:
        name: a notebook name in ``notebook_dir`` (default: the installed book), or a Path
            to a notebook file.

    Returns:
        ``{name: {"name", "inferred_type_name", "default", "help"}}`` as
        ``papermill.inspect_notebook`` reports them (``default`` is source text).
    """
    import papermill

    path = name if isinstance(name, Path) else _notebook_dir(notebook_dir) / f"{name}.ipynb"
    return dict(papermill.inspect_notebook(str(path)))


def resolve_notebooks(only: Iterable[str] | None, known: Sequence[str]) -> list[str]:
    """Map the names in ``only`` to known notebooks, in book order.

    A name may be given as the stem (``04_loss``), the file name (``04_loss.ipynb``) or a
    unique prefix (``04``). ``None`` selects every notebook.

    Raises:
        ValueError: a name matches no notebook, or more than one.
    """
    if only is None:
        return list(known)
    chosen: set[str] = set()
    for raw in only:
        name = str(raw).removesuffix(".ipynb")
        if name in known:
            chosen.add(name)
            continue
        matches = [k for k in known if k.startswith(name)] if name else []
        if len(matches) == 1:
            chosen.add(matches[0])
        elif matches:
            raise ValueError(f"notebook {raw!r} is ambiguous: it matches {', '.join(matches)}")
        else:
            raise ValueError(
                f"unknown notebook {raw!r}; known notebooks: {', '.join(known)} "
                "(or give a notebook file's path)"
            )
    return [k for k in known if k in chosen]


def _as_path(raw: str | Path) -> Path | None:
    """``raw`` as a notebook file's path, or None when it is a name.

    A path is what has a folder in it (``notebooks/05_distillation.ipynb``, what tab
    completion gives) or names an existing ``.ipynb`` file (``05_distillation.ipynb`` in
    the current folder: the student's copy).
    """
    text = str(raw)
    if isinstance(raw, Path) or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"notebook {text!r} is not a notebook file: no such file")
        if path.suffix != ".ipynb":
            raise ValueError(f"notebook {text!r} must be a .ipynb file")
        return path
    path = Path(text)
    return path if path.suffix == ".ipynb" and path.is_file() else None


def select_notebooks(
    only: Iterable[str | Path] | None, notebook_dir: str | Path | None = None
) -> dict[str, Path]:
    """The notebooks a run executes: name -> source file, in book order (by name).

    Each entry of ``only`` is a name of ``notebook_dir``'s (default: the installed book's;
    stem, file name or unique prefix, see :func:`resolve_notebooks`) or a notebook file's
    path. A path inside ``notebook_dir`` is that notebook; a path elsewhere (an edited copy)
    runs that file, under its own name. ``None`` selects every notebook of ``notebook_dir``.

    Raises:
        ValueError: an unknown or ambiguous name, a missing file, or two files of one name.
    """
    folder = _notebook_dir(notebook_dir).resolve()
    known = list_notebooks(folder)
    if only is None:
        if not known:
            raise ValueError(f"no notebooks found in {folder}")
        return {name: folder / f"{name}.ipynb" for name in known}
    names: list[str] = []
    files: dict[str, Path] = {}
    for raw in only:
        path = _as_path(raw)
        if path is None:
            names.append(str(raw))
        elif path.resolve().parent == folder:
            names.append(path.stem)
        else:
            other = files.setdefault(path.stem, path.resolve())
            if other != path.resolve():
                raise ValueError(f"notebooks {other} and {path} have one name: run one at a time")
    chosen = {name: folder / f"{name}.ipynb" for name in resolve_notebooks(names, known)}
    for name, path in files.items():
        if name in chosen:
            raise ValueError(
                f"notebook {name} is given twice, as the book's and as {path}: choose one"
            )
        chosen[name] = path
    return dict(sorted(chosen.items()))


def check_timeout(timeout: Any) -> None:
    if not (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"timeout must be an integer number of seconds > 0, got {timeout!r}")


def check_book_params(params: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]) -> None:
    from kdbook.config import check_params

    if "run_dir" in params:
        raise ValueError("run_dir is set by the run folder: use --out DIR (run_book(out=...))")
    every = sorted({p for names in declared.values() for p in names})
    for pname in params:
        if pname not in every:
            raise ValueError(
                f"unknown parameter {pname!r}: not declared in the parameters cell of "
                f"{', '.join(declared)}; declared: {', '.join(every) or 'none'}"
            )
    check_params(dict(params))
    # The data must be in place before any notebook starts (preset's data set included).
    import dataclasses

    from kdbook.config import Config, make_config
    from kdbook.data import check_available

    fields = {f.name for f in dataclasses.fields(Config)}
    cfg = make_config(**{k: v for k, v in params.items() if k in fields})
    check_available(cfg.dataset)


def absolute_dataset(params: dict[str, Any]) -> None:
    """Make a relative ``imagefolder:PATH`` absolute from the caller's folder, where it exists.

    The notebooks run in ``notebooks/``; a path typed at the shell means the shell's folder.
    """
    spec = params.get("dataset")
    if isinstance(spec, str) and spec.startswith("imagefolder:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        if not path.is_absolute() and path.exists():
            params["dataset"] = f"imagefolder:{path.resolve()}"


def declared_parameters(
    sources: Mapping[str, Path], params: dict[str, Any]
) -> dict[str, dict[str, dict]]:
    """The selected notebooks (in book order) -> their declared parameters, once ``params``
    (made absolute where it names a folder) is checked against them."""
    declared = {name: notebook_parameters(path) for name, path in sources.items()}
    absolute_dataset(params)
    check_book_params(params, declared)
    return declared
