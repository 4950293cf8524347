"""Running the book: its notebooks executed with papermill into one run folder, resumed where
an earlier run stopped (:func:`run_book`).

The notebooks and their parameters are chosen and checked by
:mod:`kdbook.machinery.selection`, each is executed by :mod:`kdbook.machinery.execute`, a
failure becomes one :class:`~kdbook.machinery.errors.BookError` line
(:mod:`kdbook.machinery.errors`). What the run leaves is written by :mod:`kdbook.report` and
:mod:`kdbook.machinery.html`.

>>> run_dir = run_book(only=["04_loss"], params={"temperature": 2.0})  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kdbook.io import atomic_write, read_json
from kdbook.machinery.errors import BookError, notebook_failure, widget_failure
from kdbook.machinery.execute import execute_with_retry
from kdbook.machinery.html import render_html
from kdbook.machinery.installed import REFERENCES, book_dir
from kdbook.machinery.runfolder import hold
from kdbook.machinery.selection import check_timeout, declared_parameters, select_notebooks
from kdbook.report import jsonable, write_results


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
        execute_with_retry(source, target, parameters, timeout)
    except KeyboardInterrupt:
        state[name] = {"status": "interrupted", "seconds": round(time.perf_counter() - t0, 1)}
        print("interrupted", flush=True)
        write_results(run_dir, status="failed", notebooks=state, finished=_now())
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        failure = notebook_failure(name, exc, target, run_dir, timeout)
    if failure is None:
        failure = widget_failure(name, target, run_dir)
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
            (:func:`kdbook.machinery.installed.book_dir`).
        rerun: run every selected notebook even where an earlier run finished it.
        wait: when another live process writes the run folder, wait for it instead of
            refusing (one writer per run folder: :func:`kdbook.machinery.runfolder.hold`).

    Returns:
        The run folder (absolute).

    Raises:
        ValueError: bad notebook name, parameter name or value (nothing was run).
        BookError: a notebook failed; its one-line report was printed and the remaining
            notebooks were not run.
        RunFolderBusy: another live process writes the run folder (and ``wait`` is False).
    """
    check_timeout(timeout)
    params = dict(params or {})
    sources = select_notebooks(only, notebook_dir)
    declared = declared_parameters(sources, params)

    if out is None:
        out = Path.cwd() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    with hold(out, wait=wait) as run_dir:
        for line in _setup_lines(params):
            print(f"book: {line}", flush=True)
        _run_held(run_dir, sources, declared, params, timeout, rerun)
    return run_dir


def _setup_lines(params: Mapping[str, Any]) -> list[str]:
    """What the run's configuration says before any work (the preset a data set chose, the
    device 'auto' became, a full-size teacher on a CPU, SYNTHETIC data): once for the book,
    as each notebook also prints it (:func:`kdbook.config.setup_lines`)."""
    from kdbook.config import DEFAULT_PRESET, FIELDS, make_config, setup_lines

    given = {k: v for k, v in params.items() if k in FIELDS}
    try:
        cfg = make_config(**given)
    except (TypeError, ValueError):  # a notebook's own check reports it, naming the notebook
        return []
    return setup_lines(cfg, given.get("device"), given.get("preset", DEFAULT_PRESET))


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
    _copy_references(run_dir, sources)
    render_html(run_dir)


def _copy_references(run_dir: Path, sources: Mapping[str, Path]) -> None:
    """The book's references page beside the executed notebooks, whose first cells link it:
    the one beside the first notebook that has one, else the installed book's."""
    folders = [*dict.fromkeys(p.parent for p in sources.values()), book_dir()]
    page = next((f / REFERENCES for f in folders if (f / REFERENCES).is_file()), None)
    if page is not None:
        data = page.read_bytes()
        target = run_dir / REFERENCES
        if not target.is_file() or target.read_bytes() != data:
            atomic_write(target, lambda f: f.write(data))
