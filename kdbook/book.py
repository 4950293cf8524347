"""Run the book's notebooks with papermill into one run folder, and summarise the run.

A run folder (``runs/<YYYYmmdd-HHMMSS>/`` by default) ends up holding:

- ``NN_name.ipynb``: each executed notebook (kept, partial, when a cell fails);
- ``metrics/NN_name.json``: what each notebook reported with :func:`save_metrics`;
- ``figures/*.png``: figures the notebooks saved;
- ``results.json``: everything above merged, plus status, timings and versions;
- ``summary.md``: the one-page report a person reads.

>>> run_dir = run_book(only=["04_loss"], params={"temperature": 2.0})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kdbook.io import read_json, write_json, write_text

NOTEBOOK_DIR: Path = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "python3"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
MISSING = "–"
_KEEP: Any = object()  # write_results: keep the value already in results.json


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


def _notebook_dir(notebook_dir: str | Path | None) -> Path:
    return Path(NOTEBOOK_DIR if notebook_dir is None else notebook_dir)


def list_notebooks(notebook_dir: str | Path | None = None) -> list[str]:
    """Return the notebook names (file stems such as ``"01_data"``) in ``notebook_dir``
    (default :data:`NOTEBOOK_DIR`), sorted."""
    folder = _notebook_dir(notebook_dir)
    return sorted(p.stem for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def notebook_parameters(name: str, notebook_dir: str | Path | None = None) -> dict[str, dict]:
    """Return the parameters declared in a notebook's ``parameters`` cell.

    Returns:
        ``{name: {"name", "inferred_type_name", "default", "help"}}`` as
        ``papermill.inspect_notebook`` reports them (``default`` is source text).
    """
    import papermill

    path = _notebook_dir(notebook_dir) / f"{name}.ipynb"
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
            raise ValueError(f"unknown notebook {raw!r}; known notebooks: {', '.join(known)}")
    return [k for k in known if k in chosen]


# --------------------------------------------------------------------------- metrics


def _jsonable(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays, paths and non-finite floats into plain JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    return str(obj)


def save_metrics(run_dir: str | Path, notebook: str, metrics: Mapping[str, Any]) -> Path:
    """Write what a notebook reports to ``run_dir/metrics/<notebook>.json`` (atomically).

    Call it once, at the end of a notebook; a later call replaces the file. Recognised keys
    (all optional, every field may be missing or None):

    - ``"config"``: the resolved parameters (``Config.as_dict()``);
    - ``"models"``: rows ``{"model", "arch", "accuracy_mean", "accuracy_ci95", "num_seeds",
      "params", "flops", "latency_ms", "size_kb"}``; accuracies in percent (0-100);
    - ``"comparisons"``: rows ``{"setting", "num_seeds", "scratch_mean", "scratch_ci95",
      "kd_mean", "kd_ci95", "gain_mean", "gain_ci95"}`` (percent and percentage points;
      gain = KD - scratch), as ``kdbook.evaluate.Comparison.row()`` returns them.

    Anything else is kept as is. numpy/torch numbers are converted; NaN becomes null.

    Args:
        run_dir: the run folder (the notebook's ``run_dir`` parameter).
        notebook: the notebook's name, e.g. ``"05_distillation"``.
        metrics: the dictionary to save.

    Returns:
        The path written.
    """
    if not notebook or "/" in notebook or "\\" in notebook or notebook.startswith("."):
        raise ValueError(f"notebook must be a notebook name such as '02_teacher', got {notebook!r}")
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    for key in ("models", "comparisons"):
        rows = metrics.get(key)
        if rows is not None and not (
            isinstance(rows, (list, tuple)) and all(isinstance(r, Mapping) for r in rows)
        ):
            raise ValueError(f"metrics[{key!r}] must be a list of dicts, got {rows!r}")
    if metrics.get("config") is not None and not isinstance(metrics["config"], Mapping):
        raise ValueError(f"metrics['config'] must be a dict, got {metrics['config']!r}")
    return write_json(Path(run_dir) / "metrics" / f"{notebook}.json", _jsonable(metrics))


def _read_metrics(run_dir: Path) -> dict[str, dict]:
    metrics: dict[str, dict] = {}
    for path in sorted((run_dir / "metrics").glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict):
            metrics[path.stem] = data
    return metrics


def _versions() -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import kdbook

    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "kdbook": version("kdbook") or kdbook.__version__,
        "papermill": version("papermill"),
        "platform": platform.platform(),
    }


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def write_results(
    run_dir: str | Path,
    *,
    status: str | None = _KEEP,
    notebooks: Mapping[str, Mapping[str, Any]] | None = None,
    started: str | None = _KEEP,
    finished: str | None = _KEEP,
    parameters: Mapping[str, Any] | None = _KEEP,
) -> dict[str, Any]:
    """Merge ``run_dir/metrics/*.json`` into ``results.json`` and write ``summary.md``.

    Notebooks may call it too (``write_results(run_dir)``) to refresh the summary after an
    interactive session. Keyword arguments not given keep the values of an existing
    results.json (status defaults to ``"ok"``); ``notebooks`` entries are merged over it.

    Returns:
        The results dictionary that was written.
    """
    run_dir = Path(run_dir)
    previous: dict[str, Any] = {}
    if (run_dir / "results.json").is_file():
        try:
            previous = read_json(run_dir / "results.json")
        except ValueError:  # a file from elsewhere that is not JSON: rebuild from scratch
            previous = {}
    metrics = _read_metrics(run_dir)

    config: dict[str, Any] = {}
    models: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, dict[str, Any]] = {}  # by setting: a later notebook's row wins
    for data in metrics.values():
        if isinstance(data.get("config"), dict):
            config = data["config"]
        for row in data.get("models") or []:
            if not isinstance(row, dict):
                continue
            key = str(row.get("model", row.get("arch", "?")))
            merged = models.setdefault(key, {"model": key})
            merged.update({k: v for k, v in row.items() if v is not None})
        for row in data.get("comparisons") or []:
            if isinstance(row, dict):
                comparisons[str(row.get("setting", len(comparisons)))] = row

    nb_status = dict(previous.get("notebooks") or {})
    nb_status.update({k: dict(v) for k, v in (notebooks or {}).items()})
    figures_dir = run_dir / "figures"
    figures = sorted(
        p.relative_to(run_dir).as_posix()
        for p in figures_dir.rglob("*")
        if p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg") and p.is_file()
    )
    results: dict[str, Any] = {
        "status": (previous.get("status") or "ok") if status is _KEEP else status,
        "started": previous.get("started") if started is _KEEP else started,
        "finished": previous.get("finished") if finished is _KEEP else finished,
        "dataset": config.get("dataset"),
        "preset": config.get("preset"),
        "seed": config.get("seed"),
        "num_seeds": config.get("num_seeds"),
        "config": config,
        "parameters": dict(
            (previous.get("parameters") or {}) if parameters is _KEEP else (parameters or {})
        ),
        "versions": _versions(),
        "notebooks": nb_status,
        "models": list(models.values()),
        "comparisons": list(comparisons.values()),
        "metrics": metrics,
        "figures": figures,
    }
    results = _jsonable(results)
    write_json(run_dir / "results.json", results)
    write_text(run_dir / "summary.md", render_summary(results, run_dir))
    return results


# --------------------------------------------------------------------------- summary


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def human_count(n: Any) -> str:
    """Format a count for people: 11_173_962 -> '11.2M', 690 -> '690', None -> '–'."""
    x = _num(n)
    if x is None:
        return MISSING
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}" if x == int(x) else f"{x:.3g}"


def _fixed(x: Any, big: int = 0) -> str:
    v = _num(x)
    if v is None:
        return MISSING
    digits = 2 if abs(v) < 10 else 1 if abs(v) < 100 else big
    return f"{v:,.{digits}f}"


def _seconds(x: Any) -> str:
    v = _num(x)
    return MISSING if v is None else f"{v:,.1f}"


def format_interval(mean: Any, ci95: Any, *, signed: bool = False, unit: str = " %") -> str:
    """Format a percentage and its 95% half-width: (93.42, 1.5) -> '93.4 ± 1.5 %'."""
    m = _num(mean)
    if m is None:
        return MISSING
    text = f"{m:+.1f}" if signed else f"{m:.1f}"
    c = _num(ci95)
    if c is not None:
        text += f" ± {c:.1f}"
    return text + unit


def verdict(gain_mean: Any, gain_ci95: Any) -> str:
    """Say in words whether a gain's 95% interval excludes zero.

    Returns:
        ``"KD helps"`` (interval above 0), ``"KD hurts"`` (below 0), ``"inside seed noise"``
        (it contains 0) or ``'–'`` when the mean or interval is missing.
    """
    m, c = _num(gain_mean), _num(gain_ci95)
    if m is None or c is None:
        return MISSING
    if m - abs(c) > 0:
        return "KD helps"
    if m + abs(c) < 0:
        return "KD hurts"
    return "inside seed noise"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_summary(results: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """Render a results dictionary (see :func:`write_results`) as one page of markdown."""
    config = results.get("config") or {}
    name = Path(run_dir).name if run_dir is not None else "run"
    seed_text = MISSING
    if results.get("seed") is not None:
        # Notebooks may run different numbers of seeds: each table row states its own.
        seed_text = f"from seed {_cell(results.get('seed'))} (each row gives its number of seeds)"
    lines = [
        f"# kdbook run `{name}`",
        "",
        f"- Status: **{_cell(results.get('status'))}**",
        f"- Date: {_cell(results.get('finished') or results.get('started'))}",
        f"- Data set: {_cell(results.get('dataset'))}",
        f"- Preset: {_cell(results.get('preset'))}",
        f"- Seeds: {seed_text}",
        f"- Device: {_cell(config.get('device'))}",
    ]
    overrides = results.get("parameters") or {}
    if overrides:
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        lines.append(f"- Parameters given: {_cell(given)}")

    lines += ["", "## Models", ""]
    models = results.get("models") or []
    if models:
        lines += _table(
            [
                "model",
                "arch",
                "accuracy (mean ± 95% CI)",
                "seeds",
                "params",
                "FLOPs",
                "latency ms",
                "size KB",
            ],
            [
                [
                    m.get("model"),
                    m.get("arch"),
                    format_interval(m.get("accuracy_mean"), m.get("accuracy_ci95")),
                    m.get("num_seeds"),
                    human_count(m.get("params")),
                    human_count(m.get("flops")),
                    _fixed(m.get("latency_ms")),
                    _fixed(m.get("size_kb"), big=1),
                ]
                for m in models
            ],
        )
    else:
        lines.append("No model was reported.")

    lines += ["", "## Does distillation help?", ""]
    comparisons = results.get("comparisons") or []
    if comparisons:
        lines += [
            "Student trained with KD against the same student trained alone from the same",
            "initial weights; mean ± 95% interval over seeds. Gain is in percentage points.",
            "",
        ]
        lines += _table(
            ["setting", "seeds", "scratch", "KD", "gain", "verdict"],
            [
                [
                    c.get("setting"),
                    c.get("num_seeds"),
                    format_interval(c.get("scratch_mean"), c.get("scratch_ci95")),
                    format_interval(c.get("kd_mean"), c.get("kd_ci95")),
                    format_interval(
                        c.get("gain_mean"), c.get("gain_ci95"), signed=True, unit=" pt"
                    ),
                    verdict(c.get("gain_mean"), c.get("gain_ci95")),
                ]
                for c in comparisons
            ],
        )
    else:
        lines.append("No comparison was reported.")

    lines += ["", "## Notebooks", ""]
    notebooks = results.get("notebooks") or {}
    if notebooks:
        lines += _table(
            ["notebook", "status", "seconds", "error"],
            [
                [nb, info.get("status"), _seconds(info.get("seconds")), info.get("error")]
                for nb, info in notebooks.items()
            ],
        )
    else:
        lines.append("No notebook was run by `kdbook book`.")

    figures = results.get("figures") or []
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures] or ["No figure was saved."]

    versions = results.get("versions") or {}
    if versions:
        lines += ["", "---", ""]
        lines.append(" · ".join(f"{k} {_cell(v)}" for k, v in versions.items()))
    return "\n".join(lines) + "\n"


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


# --------------------------------------------------------------------------- running


def _execution_started(nb_path: Path) -> bool:
    """Whether papermill started executing cells of the notebook at ``nb_path``."""
    if not nb_path.is_file():
        return False
    import nbformat

    try:
        nb = nbformat.read(str(nb_path), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable output means nothing ran
        return False
    return any(
        (cell.get("metadata", {}).get("papermill") or {}).get("start_time") for cell in nb.cells
    )


def _last_started_cell(nb_path: Path) -> int | None:
    """The ``In [N]`` count (else the index) of the last cell papermill started."""
    import nbformat

    try:
        nb = nbformat.read(str(nb_path), as_version=4)
    except Exception:  # noqa: BLE001
        return None
    last = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.metadata.get("papermill") or {}).get("start_time"):
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


def _execute(
    name: str,
    source: Path,
    target: Path,
    parameters: dict[str, Any],
    notebook_dir: Path,
    timeout: int,
) -> None:
    import papermill

    with _quiet_unconfigured_logging():
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(notebook_dir),
            execution_timeout=timeout,
            progress_bar=False,
            log_output=False,
            # The kernel's own log is noise here ("running over TCP without encryption", and
            # "KeyboardInterrupt caught in kernel" when jupyter_client interrupts it at
            # shutdown); errors in cells reach papermill as messages, not through this log.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )


def _execute_with_retry(
    name: str,
    source: Path,
    target: Path,
    parameters: dict[str, Any],
    notebook_dir: Path,
    timeout: int,
) -> None:
    """Execute once; retry once when the kernel failed to start (no cell ran)."""
    from papermill.exceptions import PapermillExecutionError

    try:
        _execute(name, source, target, parameters, notebook_dir, timeout)
    except PapermillExecutionError:
        raise
    except (RuntimeError, TimeoutError):
        if _execution_started(target):
            raise
        time.sleep(1.0)
        _execute(name, source, target, parameters, notebook_dir, timeout)


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


def run_book(
    out: str | Path | None = None,
    only: list[str] | None = None,
    params: dict[str, Any] | None = None,
    timeout: int = 900,
    notebook_dir: str | Path | None = None,
    rerun: bool = False,
) -> Path:
    """Execute notebooks with papermill, in book order, into one run folder.

    Everything is validated before any output is created: the notebook names, that each
    parameter is declared by a selected notebook, and the values (``check_params``).
    Each notebook gets only the parameters it declares, plus ``run_dir`` (the absolute run
    folder) when it declares one, and runs with ``notebooks/`` as its working directory.
    After each notebook, results.json and summary.md are rewritten.

    Run again into the same folder with the same parameters, it resumes: the leading
    notebooks that finished there (and have not been edited since) are skipped, and
    everything from the first one that did not finish is run again (later notebooks read
    what earlier ones left).

    Args:
        out: the run folder; default ``runs/<YYYYmmdd-HHMMSS>`` under the current directory.
        only: notebook names to run (stem, file name or unique prefix); default all.
        params: parameter overrides, e.g. ``{"temperature": 2.0, "preset": "cifar10"}``.
        timeout: seconds allowed per cell.
        notebook_dir: where the notebooks are; default :data:`NOTEBOOK_DIR`.
        rerun: run every selected notebook even where an earlier run finished it.

    Returns:
        The run folder (absolute).

    Raises:
        ValueError: bad notebook name, parameter name or value (nothing was run).
        BookError: a notebook failed; its one-line report was printed and the remaining
            notebooks were not run.
    """
    if not (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"timeout must be an integer number of seconds > 0, got {timeout!r}")
    notebook_dir = _notebook_dir(notebook_dir).resolve()
    params = dict(params or {})
    known = list_notebooks(notebook_dir)
    if not known:
        raise ValueError(f"no notebooks found in {notebook_dir}")
    selected = resolve_notebooks(only, known)
    declared = {name: notebook_parameters(name, notebook_dir) for name in selected}
    _absolute_dataset(params)
    _check_book_params(params, declared)

    if out is None:
        out = Path.cwd() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    finished_before = {} if rerun else _finished_notebooks(run_dir, params)

    started = _now()
    state: dict[str, dict[str, Any]] = {name: {"status": "pending"} for name in selected}
    write_results(
        run_dir,
        status="running",
        notebooks=state,
        started=started,
        finished=None,
        parameters=params,
    )
    total = len(selected)
    for i, name in enumerate(selected, 1):
        nb_params = {k: v for k, v in params.items() if k in declared[name]}
        if "run_dir" in declared[name]:
            nb_params["run_dir"] = str(run_dir)
        source, target = notebook_dir / f"{name}.ipynb", run_dir / f"{name}.ipynb"
        source_hash = _file_hash(source)
        earlier = finished_before.get(name)
        if earlier is not None and earlier.get("source") == source_hash and target.is_file():
            state[name] = {**earlier, "skipped": True}
            print(f"[{i}/{total}] {name} ... finished earlier, skipped", flush=True)
            continue
        finished_before = {}  # from here on, everything runs again
        target.unlink(missing_ok=True)  # a copy from an earlier run in this folder is stale
        print(f"[{i}/{total}] {name} ... ", end="", flush=True)
        state[name] = {"status": "running"}
        t0 = time.perf_counter()
        failure: BookError | None = None
        try:
            _execute_with_retry(name, source, target, nb_params, notebook_dir, timeout)
        except KeyboardInterrupt:
            state[name] = {"status": "interrupted", "seconds": round(time.perf_counter() - t0, 1)}
            print("interrupted", flush=True)
            write_results(run_dir, status="failed", notebooks=state, finished=_now())
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            failure = _failure(name, exc, target, run_dir, timeout)
        if failure is None:
            errors = widget_errors(target) if target.is_file() else []
            if errors:
                e = errors[0]
                where = f"cell {e['cell']} widget callback" if e["cell"] else "widget callback"
                failure = BookError(
                    f"FAILED {name} {where}: {e['ename']}: {e['evalue']}",
                    notebook=name,
                    run_dir=run_dir,
                    cell=e["cell"],
                    ename=e["ename"],
                    evalue=e["evalue"],
                )
        seconds = round(time.perf_counter() - t0, 1)
        if failure is not None:
            state[name] = {"status": "failed", "seconds": seconds, "error": str(failure)}
            print(f"failed ({seconds:.1f} s)", flush=True)
            write_results(run_dir, status="failed", notebooks=state, finished=_now())
            print(f"{failure} (see {target})", file=sys.stderr, flush=True)
            raise failure
        state[name] = {"status": "ok", "seconds": seconds, "source": source_hash}
        print(f"ok ({seconds:.1f} s)", flush=True)
        write_results(run_dir, status="running", notebooks=state, finished=None)
    write_results(run_dir, status="ok", notebooks=state, finished=_now())
    render_html(run_dir)
    return run_dir


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
    if previous.get("parameters") != _jsonable(dict(params)):
        return {}
    notebooks = previous.get("notebooks") or {}
    return {n: dict(v) for n, v in notebooks.items() if v.get("status") == "ok"}


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


# --------------------------------------------------------------------------- sweeps

SWEEP_TABLE = "sweep.csv"
POINT_FILE = "sweep_point.json"


def sweep_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first parameter varying slowest.

    >>> sweep_points({"temperature": [1, 2], "alpha": [0.5]})
    [{'temperature': 1, 'alpha': 0.5}, {'temperature': 2, 'alpha': 0.5}]
    """
    import itertools

    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def point_name(point: Mapping[str, Any]) -> str:
    """A file-safe name for one grid point: ``{"temperature": 2, "alpha": 0.5}`` ->
    ``"temperature-2_alpha-0.5"``."""
    import re

    def safe(value: Any) -> str:
        return re.sub(
            r"[^A-Za-z0-9.+-]+", "~", f"{value:g}" if isinstance(value, float) else str(value)
        )

    return "_".join(f"{k}-{safe(v)}" for k, v in point.items())


def parse_shard(text: str) -> tuple[int, int]:
    """Read ``"i/n"`` (shard i of n, 1-based): ``"2/3"`` -> ``(2, 3)``."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must be i/n such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"shard must be i/n with 1 <= i <= n, got {text!r}")
    return i, n


def metrics_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten one notebook's saved metrics into table rows.

    The rows are ``metrics["per_seed"]`` when the notebook reports per-seed results, else
    ``metrics["comparisons"]``, else one row; each row also gets the top-level numbers and
    strings (nested values and ``config`` are left out: the sweep adds the parameters).
    """
    scalars = {
        k: v
        for k, v in metrics.items()
        if k != "config" and (v is None or isinstance(v, (bool, int, float, str)))
    }
    for key in ("per_seed", "comparisons"):
        rows = metrics.get(key)
        if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
            return [{**scalars, **r} for r in rows]
    return [scalars]


def _run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point in a worker process; return its status (never raise)."""
    name, target = task["name"], Path(task["target"])
    t0 = time.perf_counter()
    error = None
    try:
        _execute_with_retry(
            task["notebook"],
            Path(task["source"]),
            target,
            task["parameters"],
            Path(task["notebook_dir"]),
            task["timeout"],
        )
        errors = widget_errors(target) if target.is_file() else []
        if errors:
            e = errors[0]
            error = f"FAILED {name} widget callback: {e['ename']}: {e['evalue']}"
    except Exception as exc:  # noqa: BLE001 - a failed point is a row, not a crash
        failure = _failure(task["notebook"], exc, target, Path(task["run_dir"]), task["timeout"])
        error = str(failure).replace(f"FAILED {task['notebook']}", f"FAILED {name}", 1)
    return {
        "name": name,
        "status": "failed" if error else "ok",
        "error": error,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _point_complete(run_dir: Path, notebook: str, parameters: Mapping[str, Any]) -> bool:
    record = run_dir / POINT_FILE
    if not (record.is_file() and (run_dir / "metrics" / f"{notebook}.json").is_file()):
        return False
    try:
        return read_json(record).get("parameters") == _jsonable(parameters)
    except ValueError:
        return False


def run_sweep(
    notebook: str,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    seeds: int | None = None,
    params: Mapping[str, Any] | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    timeout: int = 900,
    reuse_from: str | Path | None = None,
    notebook_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Run ``notebook`` once per point of ``grid`` (papermill, in worker processes) and
    gather what each run saved with :func:`save_metrics` into ``out/sweep.csv``.

    Everything is checked before any run: the notebook, that each grid and fixed parameter
    is declared in its parameters cell, and every point's values (``check_params``).
    Each point runs with its own run folder ``out/runs/<point>/`` (its ``run_dir``) and
    leaves its executed notebook in ``out/points/<point>.ipynb``. A point that fails is
    reported in one line and recorded with status ``failed``; the others go on. A point
    whose metrics are already there (same parameters) is not run again.

    Args:
        notebook: a notebook name (or unique prefix) in ``notebook_dir``.
        grid: parameter -> values, e.g. ``{"temperature": [1, 2, 4, 8], "alpha": [0.5, 0.9]}``.
        out: the sweep folder.
        seeds: passed as ``num_seeds`` (the notebook must declare it).
        params: fixed parameters for every point.
        jobs: worker processes (papermill runs at once).
        shard: ``(i, n)``: run only points i-1, i-1+n, i-1+2n, ... (1-based i).
        timeout: seconds allowed per cell.
        reuse_from: a run folder whose checkpoints (``*.pt``, e.g. the teacher) are copied
            into each point's run folder, so that no point retrains them.
        notebook_dir: where the notebooks are; default :data:`NOTEBOOK_DIR`.
        progress: show a progress bar.

    Returns:
        The path of the table (``out/sweep.csv``): one row per point and seed (or setting),
        columns ``point_index``, ``point``, ``status``, the parameters, the metrics, ``error``.

    Raises:
        ValueError: a bad notebook, parameter name or value, grid, shard or jobs (nothing
            was run).
    """
    import shutil
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    import pandas as pd
    from tqdm.auto import tqdm

    notebook_dir = _notebook_dir(notebook_dir).resolve()
    (name,) = resolve_notebooks([notebook], list_notebooks(notebook_dir))
    declared = notebook_parameters(name, notebook_dir)
    params = dict(params or {})
    if not (isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1):
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if not (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"timeout must be an integer number of seconds > 0, got {timeout!r}")
    if not grid or any(not list(values) for values in grid.values()):
        raise ValueError(f"grid must give at least one value per parameter, got {dict(grid)!r}")
    both = sorted(set(grid) & set(params))
    if both:
        raise ValueError(f"parameter {both[0]!r} is given both in the grid and as a fixed value")
    if seeds is not None:
        if "num_seeds" not in declared:
            raise ValueError(f"--seeds needs a num_seeds parameter; {name} does not declare one")
        params["num_seeds"] = seeds
    if shard is not None:
        i, n = shard
        if not 1 <= i <= n:
            raise ValueError(f"shard must be (i, n) with 1 <= i <= n, got {shard!r}")
    if reuse_from is not None and not Path(reuse_from).is_dir():
        raise ValueError(f"reuse_from must be a run folder, got {str(reuse_from)!r}")
    _absolute_dataset(params)
    points = sweep_points(grid)
    for point in points:
        _check_book_params({**params, **point}, {name: declared})
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"grid values must give distinct point names, got {names}")
    indices = list(range(len(points)))
    if shard is not None:
        indices = indices[shard[0] - 1 :: shard[1]]

    out = Path(out).resolve()
    tasks, results = [], {}
    for index in indices:
        point = {**params, **points[index]}
        run_dir = out / "runs" / names[index]
        if _point_complete(run_dir, name, point):
            results[index] = {"status": "ok", "error": None, "skipped": True}
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics" / f"{name}.json").unlink(missing_ok=True)
        for checkpoint in sorted(Path(reuse_from).glob("*.pt")) if reuse_from else []:
            if not (run_dir / checkpoint.name).exists():
                shutil.copy2(checkpoint, run_dir / checkpoint.name)
        write_json(run_dir / POINT_FILE, {"notebook": name, "parameters": _jsonable(point)})
        nb_params = {**point, "run_dir": str(run_dir)} if "run_dir" in declared else point
        target = out / "points" / f"{names[index]}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        tasks.append(
            {
                "index": index,
                "name": names[index],
                "notebook": name,
                "source": str(notebook_dir / f"{name}.ipynb"),
                "target": str(target),
                "parameters": nb_params,
                "notebook_dir": str(notebook_dir),
                "run_dir": str(run_dir),
                "timeout": timeout,
            }
        )

    if tasks:
        bar = tqdm(total=len(tasks), desc=f"sweep {name}", unit="point", disable=not progress)
        # spawn: a fresh interpreter per worker, no state forked from the caller's threads
        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_run_point, task): task["index"] for task in tasks}
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if result["error"]:
                    bar.write(f"{result['error']} (see {out / 'points' / result['name']}.ipynb)")
                bar.update()
        bar.close()

    rows = []
    for index in indices:
        base = {"point_index": index, "point": names[index], "status": results[index]["status"]}
        base.update(points[index])
        base.update({k: v for k, v in params.items() if k not in base})
        metrics_path = out / "runs" / names[index] / "metrics" / f"{name}.json"
        if results[index]["status"] == "ok" and metrics_path.is_file():
            rows += [{**base, **row} for row in metrics_rows(read_json(metrics_path))]
        elif results[index]["status"] == "ok":
            rows.append({**base, "status": "failed", "error": f"{name} saved no metrics"})
        else:
            rows.append({**base, "error": results[index]["error"]})
    table = pd.DataFrame(rows)
    if "error" not in table.columns:
        table["error"] = None
    table = table[[c for c in table.columns if c != "error"] + ["error"]]
    return write_text(out / SWEEP_TABLE, table.to_csv(index=False))


def merge_sweeps(sources: Sequence[str | Path], out: str | Path) -> Path:
    """Merge the tables of sweep shards (folders holding sweep.csv, or CSV files) into one.

    Rows are ordered by ``point_index``; a point present in several tables keeps its last
    successful rows.

    Returns:
        The path written (atomically).
    """
    import pandas as pd

    if not sources:
        raise ValueError("merge needs at least one sweep folder or CSV file, got none")
    tables = []
    for number, source in enumerate(sources):
        path = Path(source)
        path = path / SWEEP_TABLE if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"sweep table {path} does not exist (run `kdbook sweep` first)")
        tables.append(pd.read_csv(path).assign(_source=number))
    table = pd.concat(tables, ignore_index=True)
    if "point_index" not in table.columns:
        raise ValueError("sweep tables must have a point_index column (written by kdbook sweep)")
    keep = []
    for _, rows in table.groupby("point_index", sort=True):
        ok = rows[rows["status"] == "ok"]
        chosen = ok if not ok.empty else rows
        keep.append(chosen[chosen["_source"] == chosen["_source"].max()])
    merged = pd.concat(keep).drop(columns="_source").reset_index(drop=True)
    if "error" in merged.columns:  # the same column order as an unsharded table
        merged = merged[[c for c in merged.columns if c != "error"] + ["error"]]
    return write_text(Path(out), merged.to_csv(index=False))


# --------------------------------------------------------------------------- HTML book

HTML_DIR = "html"
STATIC_DIR: Path = Path(__file__).resolve().parent / "static"


def _notebook_title(nb: Any, fallback: str) -> str:
    """The first markdown heading of a notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip()
                if title:
                    return title
        break
    return fallback


def _nav(items: Sequence[tuple[str, str]], index: int) -> str:
    """The bar above and below a chapter: contents, previous, this chapter, next."""
    from html import escape

    def link(i: int, text: str) -> str:
        if not 0 <= i < len(items):
            return "<span></span>"
        return f'<a href="{items[i][0]}.html">{text}</a>'

    return (
        '<nav class="kdbook-nav"><a href="index.html">Contents</a>'
        + link(index - 1, f"&larr; {escape(items[index - 1][1])}" if index else "")
        + f'<span class="here">{escape(items[index][1])}</span>'
        + link(index + 1, f"{escape(items[index + 1][1])} &rarr;" if index + 1 < len(items) else "")
        + "</nav>"
    )


_INDEX_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
  line-height: 1.5; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
img {{ max-width: 100%; }}
ol.chapters li {{ margin: 0.3em 0; }}
.status {{ color: #777; font-size: 90%; }}
a.anchor-link {{ display: none; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>The notebooks of this run, executed, with their outputs; sliders show the state they were
saved in (open the notebooks in JupyterLab, <code>make lab</code>, to move them).</p>
<h2>Chapters</h2>
<ol class="chapters">
{chapters}
</ol>
<hr>
{summary}
</body>
</html>
"""


def render_html(run_dir: str | Path) -> Path:
    """Render a run folder's executed notebooks as a static HTML book that opens offline.

    Writes ``run_dir/html/``: ``index.html`` (the chapters in order, then ``summary.md``
    as HTML with the figures), one ``NN_name.html`` per executed notebook (nbconvert's
    JupyterLab look; saved widget state drawn by the vendored ``@jupyter-widgets/html-manager``
    in ``html/static/embed.js``), and ``figures/``. No page loads anything from a network:
    no CDN script, no MathJax (formulas stay as typed). Called by :func:`run_book` at the end
    of a run; call it again on any run folder (``render_html("runs/ci")``).

    Returns:
        The path of ``index.html``.
    """
    import gzip
    import shutil
    from html import escape

    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    run_dir = Path(run_dir).resolve()
    out = run_dir / HTML_DIR
    names = sorted(p.stem for p in run_dir.glob("*.ipynb") if not p.name.startswith("."))
    notebooks = {
        name: nbformat.read(str(run_dir / f"{name}.ipynb"), as_version=4) for name in names
    }
    items = [(name, _notebook_title(nb, name)) for name, nb in notebooks.items()]

    static = out / "static"
    static.mkdir(parents=True, exist_ok=True)
    embed = gzip.decompress((STATIC_DIR / "embed.js.gz").read_bytes())
    if not (static / "embed.js").is_file() or (static / "embed.js").read_bytes() != embed:
        from kdbook.io import atomic_write

        atomic_write(static / "embed.js", lambda f: f.write(embed))
    shutil.copyfile(STATIC_DIR / "embed.js.LICENSE.txt", static / "embed.js.LICENSE.txt")

    exporter = HTMLExporter(template_name="lab", template_file=str(STATIC_DIR / "book.html.j2"))
    for index, (name, _title) in enumerate(items):
        resources = {"kdbook": {"static": "static", "nav": _nav(items, index)}}
        body, _ = exporter.from_notebook_node(notebooks[name], resources=resources)
        write_text(out / f"{name}.html", body)

    figures = run_dir / "figures"
    if figures.is_dir():
        shutil.copytree(figures, out / "figures", dirs_exist_ok=True)

    status = {}
    if (run_dir / "results.json").is_file():
        with contextlib.suppress(ValueError):
            status = read_json(run_dir / "results.json").get("notebooks") or {}
    chapters = []
    for name, title in items:
        info = status.get(name) or {}
        note = info.get("status") or ""
        if info.get("seconds") is not None:
            note += f", {_seconds(info['seconds'])} s"
        chapters.append(
            f'<li><a href="{name}.html">{escape(title)}</a> '
            f'<span class="status">{escape(name)}{" · " + escape(note) if note else ""}</span></li>'
        )
    summary_md = run_dir / "summary.md"
    summary = (
        markdown2html_mistune(summary_md.read_text(encoding="utf-8"))
        if summary_md.is_file()
        else "<p>No summary.md in this run folder.</p>"
    )
    page = _INDEX_PAGE.format(
        title=escape(f"kdbook: {run_dir.name}"),
        chapters="\n".join(chapters) or "<li>No executed notebook in this run folder.</li>",
        summary=summary,
    )
    index = write_text(out / "index.html", page)
    for path in out.rglob("*"):  # a site: readable by a web server, not only by its owner
        path.chmod(0o755 if path.is_dir() else 0o644)
    return index
