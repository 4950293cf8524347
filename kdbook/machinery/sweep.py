"""Parameter sweeps: one notebook run once per point of a grid, and the table of results.

This module owns the grid (:func:`sweep_points`, :func:`point_name`, shards), running its
points in worker processes with the runner's papermill execution (:func:`run_sweep`), the
flattening of each point's saved metrics into rows (:func:`metrics_rows`) and the merging of
sharded tables (:func:`merge_sweeps`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdbook.io import read_json, write_json, write_text
from kdbook.machinery.errors import notebook_failure, widget_failure
from kdbook.machinery.execute import execute_with_retry
from kdbook.machinery.runfolder import hold
from kdbook.machinery.selection import (
    absolute_dataset,
    check_book_params,
    check_timeout,
    notebook_parameters,
    select_notebooks,
)
from kdbook.report import jsonable

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


# --------------------------------------------------------------------------- one point


def _run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point in a worker process; return its status (never raise)."""
    name, notebook, target = task["name"], task["notebook"], Path(task["target"])
    run_dir = Path(task["run_dir"])
    t0 = time.perf_counter()
    try:
        execute_with_retry(
            Path(task["source"]),
            target,
            task["parameters"],
            task["timeout"],
        )
        failure = widget_failure(notebook, target, run_dir)
    except Exception as exc:  # noqa: BLE001 - a failed point is a row, not a crash
        failure = notebook_failure(notebook, exc, target, run_dir, task["timeout"])
    error = None
    if failure is not None:  # the report names the point, not the notebook
        error = str(failure).replace(f"FAILED {notebook}", f"FAILED {name}", 1)
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
        return read_json(record).get("parameters") == jsonable(parameters)
    except ValueError:
        return False


def _prepare_point(
    out: Path,
    point_dir: str,
    notebook: str,
    point: dict[str, Any],
    declared: Mapping[str, Any],
    reuse_from: str | Path | None,
) -> dict[str, Any]:
    """Lay out one point's run folder and return what its worker needs (less index and
    timeout): the stale metrics and executed notebook are removed, checkpoints copied."""
    import shutil

    run_dir = out / "runs" / point_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics" / f"{notebook}.json").unlink(missing_ok=True)
    for checkpoint in sorted(Path(reuse_from).glob("*.pt")) if reuse_from else []:
        if not (run_dir / checkpoint.name).exists():
            shutil.copy2(checkpoint, run_dir / checkpoint.name)
    write_json(run_dir / POINT_FILE, {"notebook": notebook, "parameters": jsonable(point)})
    nb_params = {**point, "run_dir": str(run_dir)} if "run_dir" in declared else point
    target = out / "points" / f"{point_dir}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    return {
        "name": point_dir,
        "notebook": notebook,
        "target": str(target),
        "parameters": nb_params,
        "run_dir": str(run_dir),
    }


# --------------------------------------------------------------------------- the sweep


def _check_sweep(
    name: str,
    declared: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    params: dict[str, Any],
    seeds: int | None,
    jobs: int,
    timeout: int,
    shard: tuple[int, int] | None,
    reuse_from: str | Path | None,
) -> None:
    """Check the sweep's arguments (nothing runs on a ValueError); ``seeds`` goes into
    ``params`` as ``num_seeds``, and a relative image folder is made absolute."""
    if not (isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1):
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    check_timeout(timeout)
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
    absolute_dataset(params)


def _grid_plan(
    name: str,
    declared: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    params: Mapping[str, Any],
    shard: tuple[int, int] | None,
) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """The grid's points (each checked), their names, and the indices this shard runs."""
    points = sweep_points(grid)
    for point in points:
        check_book_params({**params, **point}, {name: declared})
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"grid values must give distinct point names, got {names}")
    indices = list(range(len(points)))
    if shard is not None:
        indices = indices[shard[0] - 1 :: shard[1]]
    return points, names, indices


def _run_tasks(
    tasks: list[dict[str, Any]], jobs: int, name: str, out: Path, progress: bool
) -> dict[int, dict[str, Any]]:
    """Run the points' tasks in ``jobs`` worker processes: point index -> its status."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    results = {}
    bar = tqdm(total=len(tasks), desc=f"sweep {name}", unit="point", disable=not progress)
    # spawn: a fresh interpreter per worker, no state forked from the caller's threads;
    # the workers (and the kernels they start) divide the cores between them
    workers = min(jobs, len(tasks))
    share = (str(max(1, (os.cpu_count() or 1) // workers)),)
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_share_cores, initargs=share
    ) as pool:
        futures = {pool.submit(_run_point, task): task["index"] for task in tasks}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if result["error"]:
                bar.write(f"{result['error']} (see {out / 'points' / result['name']}.ipynb)")
            bar.update()
    bar.close()
    return results


def _share_cores(threads: str) -> None:
    """A sweep worker's cap on torch threads, read by :func:`kdbook.runtime.available_cores`
    in the kernels it starts."""
    from kdbook.runtime import THREADS_ENV

    os.environ[THREADS_ENV] = threads


def _write_table(
    out: Path,
    name: str,
    indices: list[int],
    names: list[str],
    points: list[dict[str, Any]],
    params: Mapping[str, Any],
    results: Mapping[int, Mapping[str, Any]],
) -> Path:
    """Write ``out/sweep.csv``: each point's metrics rows, or one row with its error."""
    import pandas as pd

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


def run_sweep(
    notebook: str | Path,
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
    wait: bool = False,
) -> Path:
    """Run ``notebook`` once per point of ``grid`` (papermill, in worker processes) and
    gather what each run saved with :func:`~kdbook.report.save_metrics` into
    ``out/sweep.csv``.

    Everything is checked before any run: the notebook, that each grid and fixed parameter
    is declared in its parameters cell, and every point's values (``check_params``).
    Each point runs with its own run folder ``out/runs/<point>/`` (its ``run_dir``) and
    leaves its executed notebook in ``out/points/<point>.ipynb``. A point that fails is
    reported in one line and recorded with status ``failed``; the others go on. A point
    whose metrics are already there (same parameters) is not run again.

    Args:
        notebook: a notebook name (or unique prefix) in ``notebook_dir``, or a notebook
            file's path (one outside the book runs that file: an edited copy).
        grid: parameter -> values, e.g. ``{"temperature": [1, 2, 4, 8], "alpha": [0.5, 0.9]}``.
        out: the sweep folder.
        seeds: passed as ``num_seeds`` (the notebook must declare it).
        params: fixed parameters for every point.
        jobs: worker processes (papermill runs at once).
        shard: ``(i, n)``: run only points i-1, i-1+n, i-1+2n, ... (1-based i).
        timeout: seconds allowed per cell.
        reuse_from: a run folder whose checkpoints (``*.pt``, e.g. the teacher) are copied
            into each point's run folder, so that no point retrains them.
        notebook_dir: where the notebooks are; default the installed book
            (:func:`kdbook.machinery.installed.book_dir`).
        progress: show a progress bar.
        wait: when another live process writes ``out``, wait for it instead of refusing
            (:func:`kdbook.machinery.runfolder.hold`).

    Returns:
        The path of the table (``out/sweep.csv``): one row per point and seed (or setting),
        columns ``point_index``, ``point``, ``status``, the parameters, the metrics, ``error``.

    Raises:
        ValueError: a bad notebook, parameter name or value, grid, shard or jobs (nothing
            was run).
        RunFolderBusy: another live process writes ``out`` (and ``wait`` is False).
    """
    ((name, source),) = select_notebooks([notebook], notebook_dir).items()
    declared = notebook_parameters(source)
    params = dict(params or {})
    _check_sweep(name, declared, grid, params, seeds, jobs, timeout, shard, reuse_from)
    points, names, indices = _grid_plan(name, declared, grid, params, shard)

    tasks, results = [], {}
    with hold(out, wait=wait) as out:
        for index in indices:
            point = {**params, **points[index]}
            if _point_complete(out / "runs" / names[index], name, point):
                results[index] = {"status": "ok", "error": None, "skipped": True}
                continue
            task = _prepare_point(out, names[index], name, point, declared, reuse_from)
            tasks.append({**task, "index": index, "source": str(source), "timeout": timeout})
        if tasks:
            results.update(_run_tasks(tasks, jobs, name, out, progress))
        return _write_table(out, name, indices, names, points, params, results)


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
