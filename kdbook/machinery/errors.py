"""Every failure of a notebook run, widget callbacks' included, as one :class:`BookError` line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kdbook.machinery.kernel import KERNEL_NAME

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


def widget_failure(name: str, target: Path, run_dir: Path) -> BookError | None:
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


def notebook_failure(
    name: str, exc: BaseException, target: Path, run_dir: Path, timeout: int
) -> BookError:
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


def execution_started(nb_path: Path) -> bool:
    """Whether papermill started executing cells of the notebook at ``nb_path``."""
    return nb_path.is_file() and bool(_started_cells(nb_path))


def _last_started_cell(nb_path: Path) -> int | None:
    """The ``In [N]`` count (else the index) of the last cell papermill started."""
    last = None
    for index, cell in _started_cells(nb_path) or []:
        if cell.cell_type == "code":
            last = cell.get("execution_count") or index
    return last
