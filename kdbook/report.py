"""A run folder's results and the words that describe them.

This module owns what the notebooks report (:func:`save_metrics`, into ``metrics/``), how it
is merged into ``results.json`` (:func:`write_results`), the one-page ``summary.md``
(:func:`render_summary`), and the small formatting rules every measuring module shares:
:func:`format_interval`, :func:`verdict` and :func:`human_count`.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdbook.config import dataset_note
from kdbook.io import read_json, write_json, write_text
from kdbook.stats import ACCURACY_RANGE as ACCURACY_RANGE
from kdbook.stats import MISSING as MISSING
from kdbook.stats import finite, format_seconds
from kdbook.stats import format_interval as format_interval
from kdbook.stats import method_verdict as method_verdict
from kdbook.stats import verdict as verdict

_KEEP: Any = object()  # write_results: keep the value already in results.json


# --------------------------------------------------------------------------- metrics


def jsonable(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays, paths and non-finite floats into plain JSON."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and arrays
        return jsonable(obj.tolist())
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
      gain = KD - scratch), as ``kdbook.compare.Comparison.row()`` returns them.

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
    return write_json(Path(run_dir) / "metrics" / f"{notebook}.json", jsonable(metrics))


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
        "kdbook": kdbook.__version__,
        "papermill": version("papermill"),
        "platform": platform.platform(),
    }


def _previous_results(run_dir: Path) -> dict[str, Any]:
    """The results.json already in ``run_dir``, else ``{}`` (none, or not JSON)."""
    if not (run_dir / "results.json").is_file():
        return {}
    try:
        return read_json(run_dir / "results.json")
    except ValueError:  # a file from elsewhere that is not JSON: rebuild from scratch
        return {}


def _merge_metrics(
    metrics: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The config, model rows and comparison rows of every notebook's metrics, merged.

    The last config wins; model rows are merged by model name (a later notebook fills a
    field); comparison rows are kept per notebook and setting, each with its ``notebook``.
    """
    config: dict[str, Any] = {}
    models: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, dict[str, Any]] = {}
    for notebook, data in metrics.items():
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
                key = f"{notebook}: {row.get('setting', len(comparisons))}"
                comparisons[key] = {"notebook": notebook, **row}
    return config, list(models.values()), list(comparisons.values())


def _rows_of(metrics: Mapping[str, Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """The rows under ``key`` in every notebook's metrics, each with its ``notebook``: the
    language-model comparisons (``"lm_comparisons"``, bits per character, 15) and the exact
    KL comparisons (``"gkd_comparisons"``, 16)."""
    return [
        {"notebook": notebook, **row}
        for notebook, data in metrics.items()
        for row in data.get(key) or []
        if isinstance(row, dict)
    ]


def _figures(run_dir: Path) -> list[str]:
    """The image files under ``run_dir/figures``, relative to ``run_dir``, sorted."""
    return sorted(
        p.relative_to(run_dir).as_posix()
        for p in (run_dir / "figures").rglob("*")
        if p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg") and p.is_file()
    )


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
    previous = _previous_results(run_dir)
    metrics = _read_metrics(run_dir)
    config, models, comparisons = _merge_metrics(metrics)
    nb_status = dict(previous.get("notebooks") or {})
    nb_status.update({k: dict(v) for k, v in (notebooks or {}).items()})
    results: dict[str, Any] = {
        "status": (previous.get("status") or "ok") if status is _KEEP else status,
        "started": previous.get("started") if started is _KEEP else started,
        "finished": previous.get("finished") if finished is _KEEP else finished,
        "dataset": config.get("dataset"),
        "dataset_note": dataset_note(config.get("dataset")),  # SYNTHETIC data says so here
        "preset": config.get("preset"),
        "seed": config.get("seed"),
        "num_seeds": config.get("num_seeds"),
        "config": config,
        "parameters": dict(
            (previous.get("parameters") or {}) if parameters is _KEEP else (parameters or {})
        ),
        "versions": _versions(),
        "notebooks": nb_status,
        "models": models,
        "comparisons": comparisons,
        "lm_comparisons": _rows_of(metrics, "lm_comparisons"),
        "kl_comparisons": _rows_of(metrics, "gkd_comparisons"),
        "metrics": metrics,
        "figures": _figures(run_dir),
    }
    results = jsonable(results)
    write_json(run_dir / "results.json", results)
    write_text(run_dir / "summary.md", render_summary(results, run_dir))
    return results


# --------------------------------------------------------------------------- words


def human_count(n: Any) -> str:
    """Format a count for people: 11_173_962 -> '11.2M', 690 -> '690', None -> '–'."""
    x = finite(n)
    if x is None:
        return MISSING
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}" if x == int(x) else f"{x:.3g}"


def _fixed(x: Any, big: int = 0) -> str:
    v = finite(x)
    if v is None:
        return MISSING
    digits = 2 if abs(v) < 10 else 1 if abs(v) < 100 else big
    return f"{v:,.{digits}f}"


def _accuracy(mean: Any, ci95: Any) -> str:
    return format_interval(mean, ci95, within=ACCURACY_RANGE)


# --------------------------------------------------------------------------- summary.md


def _cell(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _section(title: str, rows: list[str], empty: str) -> list[str]:
    """A ``## title`` section: its lines, or one sentence when it has none."""
    return ["", f"## {title}", "", *(rows or [empty])]


def _header_lines(results: Mapping[str, Any], name: str) -> list[str]:
    config = results.get("config") or {}
    seed_text = MISSING
    if results.get("seed") is not None:
        # Notebooks may run different numbers of seeds: each table row states its own.
        seed_text = f"from seed {_cell(results.get('seed'))} (each row gives its number of seeds)"
    lines = [
        f"# kdbook run `{name}`",
        "",
        f"- Status: **{_cell(results.get('status'))}**",
        f"- Date: {_cell(results.get('finished') or results.get('started'))}",
        f"- Data set: {_cell(results.get('dataset'))}"
        + (f" ({results['dataset_note']})" if results.get("dataset_note") else ""),
        f"- Preset: {_cell(results.get('preset'))}",
        f"- Seeds: {seed_text}",
        f"- Device: {_cell(config.get('device'))}",
    ]
    overrides = results.get("parameters") or {}
    if overrides:
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        lines.append(f"- Parameters given: {_cell(given)}")
    return lines


def _model_lines(models: Sequence[Mapping[str, Any]]) -> list[str]:
    if not models:
        return []
    header = ["model", "arch", "accuracy (mean ± 95% CI)", "seeds", "params", "FLOPs"]
    return _table(
        [*header, "latency ms", "size KB"],
        [
            [
                m.get("model"),
                m.get("arch"),
                _accuracy(m.get("accuracy_mean"), m.get("accuracy_ci95")),
                m.get("num_seeds"),
                human_count(m.get("params")),
                human_count(m.get("flops")),
                _fixed(m.get("latency_ms")),
                _fixed(m.get("size_kb"), big=1),
            ]
            for m in models
        ],
    )


def _comparison_lines(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    if not comparisons:
        return []
    intro = [
        "Each method against its baseline (the same student trained alone from the same",
        "initial weights, unless the row names another), as each notebook finally reported it;",
        "mean ± 95% interval over seeds, decided on the split named. Gain in percentage points.",
        "Where a notebook compares its methods with a reference method too (logit KD, offline",
        "KD, ...), the column 'vs the reference' gives that paired difference and its verdict:",
        "a method can beat the student alone and still be worse than the simpler method.",
        "",
    ]
    return intro + _table(
        ["notebook", "setting", "method", "seeds", "baseline", "method's", "gain", "verdict"]
        + ["vs the reference", "split", "caveat"],
        [
            [
                c.get("notebook", ""),
                c.get("setting"),
                c.get("method", "KD"),
                c.get("num_seeds"),
                f"{c.get('baseline', 'student alone')}: "
                + _accuracy(c.get("scratch_mean"), c.get("scratch_ci95")),
                _accuracy(c.get("kd_mean"), c.get("kd_ci95")),
                format_interval(c.get("gain_mean"), c.get("gain_ci95"), signed=True, unit=" pt"),
                c.get("verdict")
                or method_verdict(c.get("method", "KD"), c.get("gain_mean"), c.get("gain_ci95")),
                _versus_reference(c),
                c.get("split", "test"),
                c.get("caveat", ""),
            ]
            for c in comparisons
        ],
    )


def _versus_reference(row: Mapping[str, Any]) -> str:
    """``'logit KD: -1.2 ± 1.0 pt, worse'`` for a row with a reference method, else ``''``."""
    if not row.get("reference"):
        return ""
    interval = format_interval(
        row.get("vs_reference_mean"), row.get("vs_reference_ci95"), signed=True, unit=" pt"
    )
    return f"{row['reference']}: {interval}, {row.get('vs_reference', '')}"


KL_MEASURES = ("KL(teacher || student)", "KL(student || teacher)")  # 16's exact KLs


def _kl_comparison_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    intro = [
        "Students of the synthetic language (16), scored by the exact KL to the teacher in both",
        "directions (nats, lower is closer), as the notebook finally reported them; mean ± 95%",
        "interval over seeds from the same initial weights; against the student alone, paired by",
        "seed.",
        "",
    ]

    def versus(r: Mapping[str, Any], measure: str) -> str:
        if r.get(f"{measure}_vs_alone") is None:
            return "(reference)"
        interval = format_interval(
            r.get(f"{measure}_vs_alone"), r.get(f"{measure}_vs_alone_ci95"), signed=True,
            unit="", digits=4,
        )  # fmt: skip
        return f"{interval}, {r.get(f'{measure}_verdict') or ''}"

    return intro + _table(
        ["notebook", "method", "seeds"]
        + [h for m in KL_MEASURES for h in (m, f"{m} vs alone")]
        + ["diverged"],
        [
            [r.get("notebook", ""), r.get("method"), r.get("num_seeds")]
            + [
                cell
                for m in KL_MEASURES
                for cell in (
                    format_interval(r.get(m), r.get(f"{m}_ci95"), unit="", digits=4),
                    versus(r, m),
                )
            ]
            + [", ".join(f"seed {x}" for x in r.get("diverged") or [])]
            for r in rows
        ],
    )


def _lm_comparison_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    intro = [
        "Language-model students in bits per character on the test text (lower is better), as",
        "each notebook finally reported them; mean ± 95% interval over seeds from the same",
        "initial weights; bits saved: the student alone's minus the method's, seed by seed.",
        "",
    ]
    return intro + _table(
        ["notebook", "method", "seeds", "bits per character", "bits saved", "verdict", "diverged"],
        [
            [
                r.get("notebook", ""),
                r.get("method"),
                r.get("num_seeds"),
                format_interval(r.get("bpc_mean"), r.get("bpc_ci95"), unit="", digits=3),
                "(reference)" if r.get("saved_mean") is None else format_interval(
                    r.get("saved_mean"), r.get("saved_ci95"), signed=True, unit="", digits=3),
                r.get("verdict") or "",
                ", ".join(f"seed {x}" for x in r.get("diverged") or []),
            ]
            for r in rows
        ],
    )  # fmt: skip


def _notebook_lines(notebooks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not notebooks:
        return []
    return _table(
        ["notebook", "status", "seconds", "error"],
        [
            [nb, info.get("status"), format_seconds(info.get("seconds")), info.get("error")]
            for nb, info in notebooks.items()
        ],
    )


def render_summary(results: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """Render a results dictionary (see :func:`write_results`) as one page of markdown."""
    name = Path(run_dir).name if run_dir is not None else "run"
    lines = _header_lines(results, name)
    lines += _section("Models", _model_lines(results.get("models") or []), "No model was reported.")
    lines += _section(
        "Does distillation help?",
        _comparison_lines(results.get("comparisons") or []),
        "No comparison was reported.",
    )
    if results.get("lm_comparisons"):
        lines += _section(
            "Language models: does distillation help?",
            _lm_comparison_lines(results["lm_comparisons"]),
            "",
        )
    if results.get("kl_comparisons"):
        lines += _section(
            "Language models: closer to the teacher?",
            _kl_comparison_lines(results["kl_comparisons"]),
            "",
        )
    lines += _section(
        "Notebooks",
        _notebook_lines(results.get("notebooks") or {}),
        "No notebook was run by `kdbook book`.",
    )
    figures = [f"![{Path(f).stem}]({f})" for f in results.get("figures") or []]
    lines += _section("Figures", figures, "No figure was saved.")
    versions = results.get("versions") or {}
    if versions:
        lines += ["", "---", ""]
        lines.append(" · ".join(f"{k} {_cell(v)}" for k, v in versions.items()))
    return "\n".join(lines) + "\n"
