"""kdbook sweep: a tiny notebook run by papermill over a 2x2 grid, its table, shards, reruns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_notebook

from kdbook.cli import main, parse_grid
from kdbook.machinery.sweep import (
    merge_sweeps,
    metrics_rows,
    parse_shard,
    point_name,
    run_sweep,
    sweep_points,
)

PARAMS = """\
temperature = 1.0  # softening temperature
alpha = 0.5  # weight of the soft term
num_seeds = 2  # runs per point
run_dir = "unset"  # the run folder
"""

REPORT = """\
from kdbook.report import save_metrics
if temperature == 2 and alpha == 0.9:
    raise RuntimeError("this point fails on purpose")
save_metrics(run_dir, "01_point", {
    "config": {"temperature": temperature},
    "teacher_accuracy": 99.0,
    "per_seed": [
        {"seed": s, "scratch_accuracy": 80.0 + s, "kd_accuracy": 80.0 + s + temperature + alpha}
        for s in range(num_seeds)
    ],
})
"""

GRID = {"temperature": [1, 2], "alpha": [0.5, 0.9]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path]:
    """The notebook folder and one unsharded sweep over the 2x2 grid (one point fails)."""
    root = tmp_path_factory.mktemp("sweep")
    write_notebook(root / "notebooks" / "01_point.ipynb", PARAMS, REPORT)
    out = root / "full"
    run_sweep("01", GRID, out, notebook_dir=root / "notebooks", progress=False, seeds=2)
    return root / "notebooks", out


def test_grid_helpers() -> None:
    points = sweep_points(GRID)
    assert points[1] == {"temperature": 1, "alpha": 0.9}
    assert point_name({"temperature": 2.0, "dataset": "imagefolder:/a b"}) == (
        "temperature-2_dataset-imagefolder~a~b"
    )
    assert parse_grid(["temperature=1,2.5", "preset=classroom"]) == {
        "temperature": [1, 2.5],
        "preset": ["classroom"],
    }
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="--grid must be"):
        parse_grid(["temperature"])
    rows = metrics_rows({"config": {}, "a": 1, "comparisons": [{"setting": "x", "gain": 2}]})
    assert rows == [{"a": 1, "setting": "x", "gain": 2}]
    assert metrics_rows({"a": 1, "nested": {"b": 2}}) == [{"a": 1}]


def test_table_rows_columns_and_failed_point(sweep) -> None:
    _, out = sweep
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.columns[:5]) == ["point_index", "point", "status", "temperature", "alpha"]
    assert table.columns[-1] == "error"
    assert {"num_seeds", "seed", "scratch_accuracy", "kd_accuracy", "teacher_accuracy"} <= set(
        table.columns
    )
    ok = table[table.status == "ok"]
    assert len(ok) == 3 * 2  # three points, two seeds each
    row = ok[(ok.temperature == 2) & (ok.alpha == 0.5) & (ok.seed == 1)].iloc[0]
    assert row.kd_accuracy == pytest.approx(83.5) and row.scratch_accuracy == 81.0
    failed = table[table.status == "failed"]
    assert len(failed) == 1
    assert (failed.temperature.item(), failed.alpha.item()) == (2, 0.9)
    assert "RuntimeError: this point fails on purpose" in failed.error.item()
    assert (out / "points" / "temperature-2_alpha-0.9.ipynb").is_file()  # kept, with the error
    assert (out / "runs" / "temperature-1_alpha-0.5" / "metrics" / "01_point.json").is_file()


def test_rerun_skips_completed_points(sweep) -> None:
    notebook_dir, out = sweep
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.ipynb")}
    table_before = pd.read_csv(out / "sweep.csv")
    run_sweep("01_point", GRID, out, notebook_dir=notebook_dir, progress=False, seeds=2)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.ipynb")}
    failed = "temperature-2_alpha-0.9.ipynb"
    assert {k: v for k, v in after.items() if k != failed} == {
        k: v for k, v in before.items() if k != failed
    }
    assert after[failed] != before[failed]  # the failed point was tried again
    pd.testing.assert_frame_equal(pd.read_csv(out / "sweep.csv"), table_before)


def test_shards_merge_into_the_unsharded_table(sweep, tmp_path: Path) -> None:
    notebook_dir, out = sweep
    for i in (1, 2):
        run_sweep(
            "01",
            GRID,
            tmp_path / f"s{i}",
            shard=(i, 2),
            notebook_dir=notebook_dir,
            progress=False,
            seeds=2,
        )
    first = pd.read_csv(tmp_path / "s1" / "sweep.csv")
    assert sorted(first.point_index.unique()) == [0, 2]
    merged = merge_sweeps([tmp_path / "s2", tmp_path / "s1"], tmp_path / "merged.csv")
    pd.testing.assert_frame_equal(pd.read_csv(merged), pd.read_csv(out / "sweep.csv"))


def test_bad_input_is_rejected_before_any_run(sweep, tmp_path: Path, capsys) -> None:
    notebook_dir, _ = sweep
    out = tmp_path / "never"
    for grid, kwargs, message in [
        ({"temprature": [1]}, {}, "unknown parameter 'temprature'"),
        ({"temperature": [1, -2]}, {}, "temperature must be a number > 0"),
        ({"temperature": []}, {}, "at least one value"),
        ({"temperature": [1]}, {"params": {"temperature": 2}}, "both in the grid"),
        ({"temperature": [1]}, {"jobs": 0}, "jobs must be"),
        ({"temperature": [1]}, {"params": {"run_dir": "x"}}, "run_dir is set by"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_sweep("01", grid, out, notebook_dir=notebook_dir, progress=False, **kwargs)
    assert not out.exists()
    assert main(["sweep", "05_distillation", "--grid", "bogus=1", "--out", str(out)]) == 2
    assert "unknown parameter 'bogus'" in capsys.readouterr().err
    assert main(["sweep", "--merge", str(out)]) == 2  # no --out
    assert not out.exists()
