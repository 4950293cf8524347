"""kdbook bench --seeds / --thread-choice: ratios measured in one run, not times asserted."""

from __future__ import annotations

import time

import pytest

from kdbook.bench import runs as bench_runs


def test_bench_seeds_reports_the_three_paths_and_their_ratios():
    result = bench_runs.bench_seeds(2, num_epochs=1)
    paths = [row["path"] for row in result.rows]
    assert paths[:3] == ["one fit (KD, 1 seed)", "4 fits one at a time", "4 runs side by side"]
    # the tuned comparison: 3 methods x 2 settings x 2 seeds, then 3 chosen x 2 seeds
    assert paths[3].startswith("tuned comparison, 18 runs: 3 methods x 2 settings x 2 seeds")
    one, sequential, stacked, tuned = (row["seconds"] for row in result.rows)
    assert result.rows[2]["speed-up vs one at a time (x)"] == pytest.approx(sequential / stacked)
    assert result.rows[1]["time vs one fit (x)"] == pytest.approx(sequential / one)
    assert result.rows[3]["time vs one fit (x)"] == pytest.approx(tuned / one)
    assert "DKD" in result.settings["tuned comparison"]
    assert "side by side" in result.table() and result.settings["busy neighbour"] is False


def test_a_planted_delay_in_the_stack_moves_its_ratio(monkeypatch):
    from kdbook import stack  # bench_seeds looks fit_stacked up there at each call

    real = stack.fit_stacked

    def slow(*args, **kwargs):
        time.sleep(3.0)
        return real(*args, **kwargs)

    fast = bench_runs.bench_seeds(1, num_epochs=1).rows[2]["speed-up vs one at a time (x)"]
    monkeypatch.setattr(stack, "fit_stacked", slow)
    slowed = bench_runs.bench_seeds(1, num_epochs=1).rows[2]["speed-up vs one at a time (x)"]
    assert slowed < fast


def test_bench_threads_times_each_run_at_one_thread_and_the_cores(tmp_path):
    result = bench_runs.bench_threads(num_epochs=1, neighbour=True)
    kinds = ["teacher", "student alone", "distilled student"]
    setups = ["classroom", "imagefolder on a CPU"]
    assert [row["run"] for row in result.rows] == [f"{s}: {k}" for s in setups for k in kinds]
    classroom, mid_sized = result.rows[:3], result.rows[3:]
    assert all(row["auto picks"] == 1 for row in result.rows)  # both under ONE_THREAD_FLOPS
    # The mid-sized teacher's steps (alone and under the distilled student) are bigger than
    # any of the classroom's.
    biggest_classroom = max(r["step GFLOPs"] for r in classroom)
    assert mid_sized[0]["step GFLOPs"] > biggest_classroom
    assert mid_sized[2]["step GFLOPs"] > biggest_classroom
    assert all(row["s at 1 thread"] > 0 for row in result.rows)
    assert result.settings["busy neighbour"] is True
    saved = result.save(tmp_path / "b.json")
    assert '"kind": "threads"' in saved.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "seeds must be an integer >= 1, got 0"),
        (["--seeds", "2", "--thread-choice"], "give one"),
        (["--seeds", "2", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    ],
)
def test_bench_runs_bad_input(argv, message, capsys):
    from kdbook.cli import main

    assert main(["bench", *argv]) != 0
    assert message in capsys.readouterr().err
