"""Running the book's notebooks with papermill into one run folder.

This module owns the notebooks of a run (the installed book's, see
:func:`kdbook.notebooks.book_dir`, or any notebook file given by its path:
:func:`select_notebooks`) and their parameters, checking parameters before any work,
executing a notebook (one retry when its kernel fails to start), turning every failure,
widget callbacks' included, into one :class:`BookError` line, and resuming a run folder
where an earlier run stopped (:func:`run_book`). What the run leaves is written by
:mod:`kdbook.report` and :mod:`kdbook.html`.

>>> run_dir = run_book(only=["04_loss"], params={"temperature": 2.0})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kdbook.html import render_html
from kdbook.io import read_json
from kdbook.kernel import kernel_manager_class
from kdbook.notebooks import book_dir
from kdbook.report import jsonable, write_results
from kdbook.runfolder import hold

KERNEL_NAME = "python3"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"


class BookError(RuntimeError):
    """A notebook of the book failed; ``str(error)`` is the one-line report.

    Attributes:
        notebook: the failing notebook's name, e.g. ``"03_student"``.
        run_dir: the run folder (it holds the partial executed notebook and results.json).
        cell: the ``In [N]`` execution count of the failing cell, when known.
        ename: the exception's type name, e.g. ``"ValueError"``.
        evalue: the exception's message (first line).
    """

    def __init__(
        self,
        message: str,
        *,
        notebook: str | None = None,
        run_dir: Path | None = None,
        cell: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.run_dir = run_dir
        self.cell = cell
        self.ename = ename
        self.evalue = evalue


# --------------------------------------------------------------------------- notebooks


def __getattr__(name: str) -> Any:
    """``NOTEBOOK_DIR``: the installed book's folder (:func:`kdbook.notebooks.book_dir`),
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
    (default: the installed book, :func:`kdbook.notebooks.book_dir`), sorted."""
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


# --------------------------------------------------------------------------- errors


def _first_line(text: Any, limit: int = 300) -> str:
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def format_error(exc: BaseException) -> str:
    """Render an exception as one line: the message for BookError and ValueError, else
    ``Type: message``."""
    message = _first_line(exc)
    if isinstance(exc, (BookError, ValueError)):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _model_refs(value: Any) -> Iterable[str]:
    if isinstance(value, str) and value.startswith("IPY_MODEL_"):
        yield value.removeprefix("IPY_MODEL_")
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _model_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _model_refs(v)


def _widget_owners(nb: Any, models: Mapping[str, Any]) -> dict[str, int | None]:
    """Widget model id -> execution count of the first cell that displays it (or a parent)."""

    def reachable(root: str) -> set[str]:
        seen, todo = set(), [root]
        while todo:
            mid = todo.pop()
            if mid in seen or mid not in models:
                continue
            seen.add(mid)
            todo.extend(_model_refs((models[mid] or {}).get("state") or {}))
        return seen

    owner: dict[str, int | None] = {}
    for cell in nb.get("cells") or []:
        for out in cell.get("outputs") or []:
            view = (out.get("data") or {}).get("application/vnd.jupyter.widget-view+json")
            if isinstance(view, Mapping) and view.get("model_id"):
                for mid in reachable(view["model_id"]):
                    owner.setdefault(mid, cell.get("execution_count"))
    return owner


def widget_errors(nb: Any) -> list[dict[str, Any]]:
    """Find exceptions that widget callbacks swallowed, in a notebook's saved widget state.

    Papermill does not fail on an error inside an ipywidgets callback: the Output widget
    shows the traceback and the run goes on. The error is in
    ``nb.metadata.widgets[WIDGET_STATE_MIME]["state"]``.

    Args:
        nb: a notebook (``nbformat`` node or plain dict) or the path of one.

    Returns:
        One ``{"cell", "ename", "evalue"}`` per error, ``cell`` being the execution count of
        the cell that displays the widget (None when no cell does).
    """
    if isinstance(nb, (str, Path)):
        import nbformat

        nb = nbformat.read(str(nb), as_version=4)
    state = ((nb.get("metadata") or {}).get("widgets") or {}).get(WIDGET_STATE_MIME) or {}
    models: Mapping[str, Any] = state.get("state") or {}
    owner = _widget_owners(nb, models)
    found = []
    for mid, model in models.items():
        model = model or {}
        if model.get("model_name") != "OutputModel":
            continue
        for out in (model.get("state") or {}).get("outputs") or []:
            if isinstance(out, Mapping) and out.get("output_type") == "error":
                found.append(
                    {
                        "cell": owner.get(mid),
                        "ename": out.get("ename") or "Error",
                        "evalue": _first_line(out.get("evalue", "")),
                    }
                )
    return found


def _widget_failure(name: str, target: Path, run_dir: Path) -> BookError | None:
    """The first error a widget callback swallowed in the executed notebook ``target``."""
    errors = widget_errors(target) if target.is_file() else []
    if not errors:
        return None
    e = errors[0]
    where = f"cell {e['cell']} widget callback" if e["cell"] else "widget callback"
    return BookError(
        f"FAILED {name} {where}: {e['ename']}: {e['evalue']}",
        notebook=name,
        run_dir=run_dir,
        cell=e["cell"],
        ename=e["ename"],
        evalue=e["evalue"],
    )


def _failure(name: str, exc: BaseException, target: Path, run_dir: Path, timeout: int) -> BookError:
    """Turn what papermill raised into a BookError with a one-line message."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        cell = exc.exec_count if exc.exec_count is not None else exc.cell_index
        evalue = _first_line(exc.evalue)
        message = f"FAILED {name} cell {cell}: {exc.ename}: {evalue}".rstrip(": ")
        return BookError(
            message, notebook=name, run_dir=run_dir, cell=cell, ename=exc.ename, evalue=evalue
        )
    if type(exc).__name__ == "NoSuchKernel":
        return BookError(
            f"FAILED {name}: no Jupyter kernel named {KERNEL_NAME!r}; install it with "
            f"`python -m ipykernel install --sys-prefix --name {KERNEL_NAME}` (or `make venv`)",
            notebook=name,
            run_dir=run_dir,
            ename="NoSuchKernel",
        )
    cell = _last_started_cell(target) if target.is_file() else None
    where = f" cell {cell}" if cell is not None else ""
    evalue = _first_line(exc)
    if type(exc).__name__ == "CellTimeoutError":
        evalue = f"the cell ran longer than the timeout ({timeout} s)"
    return BookError(
        f"FAILED {name}{where}: {type(exc).__name__}: {evalue}".rstrip(": "),
        notebook=name,
        run_dir=run_dir,
        cell=cell,
        ename=type(exc).__name__,
        evalue=evalue,
    )


# --------------------------------------------------------------------------- executing


def _started_cells(nb_path: Path) -> list[tuple[int, Any]] | None:
    """(index, cell) of the cells papermill started in ``nb_path``; None when unreadable."""
    import nbformat

    try:
        nb = nbformat.read(str(nb_path), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable output means nothing ran
        return None
    return [
        (index, cell)
        for index, cell in enumerate(nb.cells)
        if (cell.get("metadata", {}).get("papermill") or {}).get("start_time")
    ]


def _execution_started(nb_path: Path) -> bool:
    """Whether papermill started executing cells of the notebook at ``nb_path``."""
    return nb_path.is_file() and bool(_started_cells(nb_path))


def _last_started_cell(nb_path: Path) -> int | None:
    """The ``In [N]`` count (else the index) of the last cell papermill started."""
    last = None
    for index, cell in _started_cells(nb_path) or []:
        if cell.cell_type == "code":
            last = cell.get("execution_count") or index
    return last


@contextlib.contextmanager
def _quiet_unconfigured_logging() -> Iterator[None]:
    """Silence papermill's logger (nbclient logs through it) unless logging is configured.

    Without handlers, Python prints its warnings and errors ("Kernel died while waiting for
    execute reply.") on stderr around our one-line report; with handlers, the user asked.
    """
    logger = logging.getLogger("papermill")
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _stamp_version(target: Path, source: Path) -> None:
    """Record in the executed notebook's metadata which kdbook ran it, from which file."""
    import nbformat

    from kdbook import __version__
    from kdbook.io import write_text

    if not target.is_file():
        return
    try:
        nb = nbformat.read(str(target), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable partial notebook stays as it is
        return
    nb.metadata["kdbook"] = {"version": __version__, "source": str(source)}
    write_text(target, nbformat.writes(nb))


def _execute(source: Path, target: Path, parameters: dict[str, Any], timeout: int) -> None:
    """Run ``source`` into ``target`` with papermill, in the notebook's own folder."""
    import papermill

    with _quiet_unconfigured_logging(), _stamped(target, source):
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(source.parent),
            execution_timeout=timeout,
            kernel_manager_class=kernel_manager_class(),  # no reply left unseen (kdbook.kernel)
            progress_bar=False,
            log_output=False,
            # The kernel's own log is noise here ("running over TCP without encryption", and
            # "KeyboardInterrupt caught in kernel" when jupyter_client interrupts it at
            # shutdown); errors in cells reach papermill as messages, not through this log.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )


@contextlib.contextmanager
def _stamped(target: Path, source: Path) -> Iterator[None]:
    """Stamp the executed notebook with kdbook's version when papermill is done with it,
    a partial (failed) one too."""
    try:
        yield
    finally:
        _stamp_version(target, source)


def _execute_with_retry(
    source: Path, target: Path, parameters: dict[str, Any], timeout: int
) -> None:
    """Execute once; retry once when the kernel failed to start (no cell ran)."""
    from papermill.exceptions import PapermillExecutionError

    try:
        _execute(source, target, parameters, timeout)
    except PapermillExecutionError:
        raise
    except (RuntimeError, TimeoutError):
        if _execution_started(target):
            raise
        time.sleep(1.0)
        _execute(source, target, parameters, timeout)


# --------------------------------------------------------------------------- parameters


def _check_timeout(timeout: Any) -> None:
    if not (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"timeout must be an integer number of seconds > 0, got {timeout!r}")


def _check_book_params(
    params: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]
) -> None:
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


def _absolute_dataset(params: dict[str, Any]) -> None:
    """Make a relative ``imagefolder:PATH`` absolute from the caller's folder, where it exists.

    The notebooks run in ``notebooks/``; a path typed at the shell means the shell's folder.
    """
    spec = params.get("dataset")
    if isinstance(spec, str) and spec.startswith("imagefolder:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        if not path.is_absolute() and path.exists():
            params["dataset"] = f"imagefolder:{path.resolve()}"


def _declared_parameters(
    sources: Mapping[str, Path], params: dict[str, Any]
) -> dict[str, dict[str, dict]]:
    """The selected notebooks (in book order) -> their declared parameters, once ``params``
    (made absolute where it names a folder) is checked against them."""
    declared = {name: notebook_parameters(path) for name, path in sources.items()}
    _absolute_dataset(params)
    _check_book_params(params, declared)
    return declared


# --------------------------------------------------------------------------- running


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _file_hash(path: Path) -> str:
    """sha1 of a file's bytes: an edited notebook is not the one that finished earlier."""
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()


def _finished_notebooks(run_dir: Path, params: Mapping[str, Any]) -> dict[str, dict]:
    """Notebooks an earlier run in ``run_dir`` finished with these parameters: name -> record."""
    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    try:
        previous = read_json(path)
    except (OSError, ValueError):
        return {}
    if previous.get("parameters") != jsonable(dict(params)):
        return {}
    notebooks = previous.get("notebooks") or {}
    return {n: dict(v) for n, v in notebooks.items() if v.get("status") == "ok"}


def _run_notebook(
    name: str,
    source: Path,
    parameters: dict[str, Any],
    run_dir: Path,
    timeout: int,
    state: dict[str, dict[str, Any]],
) -> float:
    """Execute one notebook of the run; return its seconds.

    On a failure (widget callbacks' included) or an interruption, record it in ``state``
    and results.json, print the one-line report, and raise.
    """
    target = run_dir / f"{name}.ipynb"
    state[name] = {"status": "running"}
    t0 = time.perf_counter()
    failure: BookError | None = None
    try:
        _execute_with_retry(source, target, parameters, timeout)
    except KeyboardInterrupt:
        state[name] = {"status": "interrupted", "seconds": round(time.perf_counter() - t0, 1)}
        print("interrupted", flush=True)
        write_results(run_dir, status="failed", notebooks=state, finished=_now())
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        failure = _failure(name, exc, target, run_dir, timeout)
    if failure is None:
        failure = _widget_failure(name, target, run_dir)
    seconds = round(time.perf_counter() - t0, 1)
    if failure is not None:
        state[name] = {"status": "failed", "seconds": seconds, "error": str(failure)}
        print(f"failed ({seconds:.1f} s)", flush=True)
        write_results(run_dir, status="failed", notebooks=state, finished=_now())
        print(f"{failure} (see {target})", file=sys.stderr, flush=True)
        raise failure
    return seconds


def run_book(
    out: str | Path | None = None,
    only: Sequence[str | Path] | None = None,
    params: dict[str, Any] | None = None,
    timeout: int = 900,
    notebook_dir: str | Path | None = None,
    rerun: bool = False,
    wait: bool = False,
) -> Path:
    """Execute notebooks with papermill, in book order, into one run folder.

    Everything is validated before any output is created: the notebook names, that each
    parameter is declared by a selected notebook, and the values (``check_params``).
    Each notebook gets only the parameters it declares, plus ``run_dir`` (the absolute run
    folder) when it declares one, and runs with its own folder as its working directory.
    After each notebook, results.json and summary.md are rewritten.

    Run again into the same folder with the same parameters, it resumes: the leading
    notebooks that finished there (and have not been edited since) are skipped, and
    everything from the first one that did not finish is run again (later notebooks read
    what earlier ones left).

    Args:
        out: the run folder; default ``runs/<YYYYmmdd-HHMMSS>`` under the current directory.
        only: notebooks to run: names (stem, file name or unique prefix) or notebook files'
            paths (one outside the book runs that file: an edited copy); default all.
        params: parameter overrides, e.g. ``{"temperature": 2.0, "preset": "cifar10"}``.
        timeout: seconds allowed per cell.
        notebook_dir: where the notebooks are; default the installed book
            (:func:`kdbook.notebooks.book_dir`).
        rerun: run every selected notebook even where an earlier run finished it.
        wait: when another live process writes the run folder, wait for it instead of
            refusing (one writer per run folder: :func:`kdbook.runfolder.hold`).

    Returns:
        The run folder (absolute).

    Raises:
        ValueError: bad notebook name, parameter name or value (nothing was run).
        BookError: a notebook failed; its one-line report was printed and the remaining
            notebooks were not run.
        RunFolderBusy: another live process writes the run folder (and ``wait`` is False).
    """
    _check_timeout(timeout)
    params = dict(params or {})
    sources = select_notebooks(only, notebook_dir)
    declared = _declared_parameters(sources, params)

    if out is None:
        out = Path.cwd() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    with hold(out, wait=wait) as run_dir:
        _run_held(run_dir, sources, declared, params, timeout, rerun)
    return run_dir


def _run_held(
    run_dir: Path,
    sources: Mapping[str, Path],
    declared: Mapping[str, Mapping[str, Any]],
    params: dict[str, Any],
    timeout: int,
    rerun: bool,
) -> None:
    """:func:`run_book`'s work, once it holds the run folder."""
    finished_before = {} if rerun else _finished_notebooks(run_dir, params)

    state: dict[str, dict[str, Any]] = {name: {"status": "pending"} for name in declared}
    write_results(
        run_dir, status="running", notebooks=state, started=_now(), finished=None, parameters=params
    )
    for i, name in enumerate(declared, 1):
        nb_params = {k: v for k, v in params.items() if k in declared[name]}
        if "run_dir" in declared[name]:
            nb_params["run_dir"] = str(run_dir)
        source_hash = _file_hash(sources[name])
        target = run_dir / f"{name}.ipynb"
        earlier = finished_before.get(name)
        if earlier is not None and earlier.get("source") == source_hash and target.is_file():
            state[name] = {**earlier, "skipped": True}
            print(f"[{i}/{len(declared)}] {name} ... finished earlier, skipped", flush=True)
            continue
        finished_before = {}  # from here on, everything runs again
        target.unlink(missing_ok=True)  # a copy from an earlier run in this folder is stale
        print(f"[{i}/{len(declared)}] {name} ... ", end="", flush=True)
        seconds = _run_notebook(name, sources[name], nb_params, run_dir, timeout, state)
        state[name] = {"status": "ok", "seconds": seconds, "source": source_hash}
        print(f"ok ({seconds:.1f} s)", flush=True)
        write_results(run_dir, status="running", notebooks=state, finished=None)
    write_results(run_dir, status="ok", notebooks=state, finished=_now())
    render_html(run_dir)
