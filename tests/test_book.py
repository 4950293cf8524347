"""kdbook.machinery (runner, selection, errors) and kdbook.report: validation before work,
papermill runs of tiny notebooks, results, summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from kdbook.compare import SCRATCH, Comparison
from kdbook.io import read_json
from kdbook.machinery.errors import WIDGET_STATE_MIME, format_error, widget_errors
from kdbook.machinery.runner import BookError, run_book
from kdbook.machinery.selection import list_notebooks, resolve_notebooks
from kdbook.report import (
    format_interval,
    human_count,
    render_summary,
    save_metrics,
    verdict,
    write_results,
)

PARAMS = """\
temperature = 4.0  # softening temperature
alpha = 0.5  # weight of the soft term
run_dir = "unset"  # the run folder
"""

REPORT = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from kdbook.report import save_metrics

fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
fig.savefig(os.path.join(run_dir, "figures", "curve.png"))
save_metrics(run_dir, "01_train", {
    "config": {"dataset": "digits", "preset": "classroom", "seed": 0, "num_seeds": 5,
               "device": "cpu", "temperature": temperature, "alpha": alpha, "run_dir": run_dir},
    "models": [
        {"model": "teacher", "arch": "digits_teacher", "accuracy_mean": 97.0,
         "accuracy_ci95": 1.0, "num_seeds": 5, "params": 11_200_000, "flops": 2_500_000,
         "latency_ms": None, "size_kb": 43712.3},
        {"model": "student (scratch)", "arch": "tiny_cnn", "accuracy_mean": 90.0,
         "accuracy_ci95": 2.0, "num_seeds": 5, "params": 690},
    ],
    "comparisons": [
        {"setting": "T=4", "num_seeds": 5, "scratch_mean": 90.0, "scratch_ci95": 2.0,
         "kd_mean": 93.0, "kd_ci95": 1.0, "gain_mean": 3.0, "gain_ci95": 1.0},
        {"setting": "T=1", "num_seeds": 5, "scratch_mean": 90.0, "scratch_ci95": 2.0,
         "kd_mean": 90.5, "kd_ci95": 2.0, "gain_mean": 0.5, "gain_ci95": 2.0},
        {"setting": "alpha=1", "num_seeds": 5, "gain_mean": -4.0, "gain_ci95": 1.0},
    ],
    "cwd": os.getcwd(),
})
"""

EVAL = """\
from kdbook.report import save_metrics
save_metrics(run_dir, "02_eval", {
    "models": [{"model": "teacher", "latency_ms": 0.42, "accuracy_mean": None},
               {"model": "student (KD)", "arch": "tiny_cnn"}],
})
"""


def test_list_and_resolve_notebooks(make_notebook, notebook_dir: Path) -> None:
    for name in ("02_teacher", "01_data", "10_vit"):
        make_notebook(name, None, "x = 1")
    known = list_notebooks(notebook_dir)
    assert known == ["01_data", "02_teacher", "10_vit"]
    assert resolve_notebooks(None, known) == known
    assert resolve_notebooks(["10_vit", "01_data.ipynb", "02"], known) == known
    with pytest.raises(ValueError, match="ambiguous.*01_data, 02_teacher"):
        resolve_notebooks(["0"], known)
    with pytest.raises(ValueError, match=r"unknown notebook '99_x'; known notebooks: 01_data"):
        resolve_notebooks(["99_x"], known)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"only": ["09_nope"]}, r"unknown notebook '09_nope'; known notebooks: 01_train, 02_eval"),
        (
            {"params": {"temprature": 2.0}},
            r"unknown parameter 'temprature'.*declared: alpha, run_dir, temperature",
        ),
        ({"params": {"temperature": -1}}, r"^temperature must be a number > 0, got -1$"),
        ({"params": {"alpha": 2}}, r"^alpha must be a number in \[0, 1\], got 2$"),
        ({"params": {"run_dir": "x"}}, r"run_dir is set by the run folder"),
        ({"timeout": 0}, r"timeout must be an integer"),
    ],
)
def test_bad_input_is_rejected_before_any_output(
    make_notebook, notebook_dir: Path, tmp_path: Path, kwargs: dict, message: str
) -> None:
    make_notebook("01_train", PARAMS, REPORT)
    make_notebook("02_eval", 'run_dir = "unset"', EVAL)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as info:
        run_book(out=out, notebook_dir=notebook_dir, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_parameter_declared_only_by_an_unselected_notebook_is_rejected(
    make_notebook, notebook_dir: Path, tmp_path: Path
) -> None:
    make_notebook("01_train", PARAMS, REPORT)
    make_notebook("02_eval", 'run_dir = "unset"', EVAL)
    with pytest.raises(ValueError, match="unknown parameter 'temperature'.*of 02_eval"):
        run_book(
            out=tmp_path / "run",
            only=["02_eval"],
            params={"temperature": 2.0},
            notebook_dir=notebook_dir,
        )
    assert not (tmp_path / "run").exists()


def test_success_writes_results_and_summary(
    make_notebook, notebook_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_notebook("01_train", PARAMS, REPORT)
    make_notebook("02_eval", 'run_dir = "unset"', EVAL)
    out = tmp_path / "runs" / "ok"

    run_dir = run_book(out=out, params={"temperature": 2.0}, notebook_dir=notebook_dir)

    assert run_dir == out.resolve()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/2] 01_train ... ok (") and lines[0].endswith(" s)")
    assert lines[1].startswith("[2/2] 02_eval ... ok (")
    assert (out / "01_train.ipynb").is_file() and (out / "02_eval.ipynb").is_file()

    results = read_json(out / "results.json")
    assert results["status"] == "ok" and results["finished"]
    assert (results["dataset"], results["preset"], results["seed"], results["num_seeds"]) == (
        "digits",
        "classroom",
        0,
        5,
    )
    # the override reached the notebook that declares it; run_dir is the absolute run folder
    assert results["config"]["temperature"] == 2.0
    assert results["config"]["run_dir"] == str(out.resolve())
    assert results["parameters"] == {"temperature": 2.0}
    # notebooks run with the notebook folder as working directory
    assert results["metrics"]["01_train"]["cwd"] == str(notebook_dir.resolve())
    # a notebook gets only the parameters it declares
    injected = [
        c.source
        for c in nbformat.read(str(out / "02_eval.ipynb"), as_version=4).cells
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert len(injected) == 1 and "temperature" not in injected[0] and "run_dir" in injected[0]

    assert set(results["notebooks"]) == {"01_train", "02_eval"}
    assert all(v["status"] == "ok" and v["seconds"] > 0 for v in results["notebooks"].values())
    models = {m["model"]: m for m in results["models"]}
    assert list(models) == ["teacher", "student (scratch)", "student (KD)"]
    assert models["teacher"]["latency_ms"] == 0.42  # a later notebook fills a field
    assert models["teacher"]["accuracy_mean"] == 97.0  # ... and None does not erase one
    assert len(results["comparisons"]) == 3
    assert results["figures"] == ["figures/curve.png"]
    assert set(results["versions"]) >= {"python", "torch", "torchvision", "kdbook", "papermill"}
    assert results["versions"]["torch"] == "2.14.1"

    summary = (out / "summary.md").read_text()
    assert "Data set: digits" in summary and "Preset: classroom" in summary
    assert "| teacher | digits_teacher | 97.0 ± 1.0 % | 5 | 11.2M | 2.5M | 0.42 | 43,712.3 |" in (
        summary
    )
    assert "| student (scratch) | tiny_cnn | 90.0 ± 2.0 % | 5 | 690 | – | – | – |" in summary
    assert (
        "| T=4 | KD | 5 | student alone: 90.0 ± 2.0 % | 93.0 ± 1.0 % | +3.0 ± 1.0 pt | KD helps |"
        in summary.replace("| 01_first | T=4", "| T=4")
    )
    assert "| inside seed noise |" in summary and "| KD hurts |" in summary
    assert "| 01_train | ok |" in summary
    assert "![curve](figures/curve.png)" in summary


def test_failure_reports_one_line_and_keeps_partial_notebook(
    make_notebook, notebook_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_notebook("01_train", PARAMS, REPORT)
    make_notebook(
        "02_fail",
        'run_dir = "unset"',
        "x = 1",
        'raise ValueError("bad thing happened\\nmore")',
        "y = 2",
    )
    make_notebook("03_after", 'run_dir = "unset"', "z = 3")
    out = tmp_path / "run"

    with pytest.raises(BookError) as info:
        run_book(out=out, notebook_dir=notebook_dir)

    # parameters cell [1], injected parameters [2], x = 1 [3], the raise [4]
    expected = "FAILED 02_fail cell 4: ValueError: bad thing happened"
    assert str(info.value) == expected
    assert (info.value.notebook, info.value.cell, info.value.ename) == ("02_fail", 4, "ValueError")
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{expected} (see {out.resolve() / '02_fail.ipynb'})"]
    assert "Traceback" not in captured.err
    assert captured.out.splitlines()[1].startswith("[2/3] 02_fail ... failed (")

    partial = nbformat.read(str(out / "02_fail.ipynb"), as_version=4)
    errors = [o for c in partial.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"
    assert not (out / "03_after.ipynb").exists()

    results = read_json(out / "results.json")
    assert results["status"] == "failed"
    assert results["notebooks"]["01_train"]["status"] == "ok"
    assert results["notebooks"]["02_fail"]["status"] == "failed"
    assert results["notebooks"]["02_fail"]["error"] == expected
    assert results["notebooks"]["03_after"]["status"] == "pending"
    assert results["models"], "metrics of the notebooks that ran are kept"
    assert "**failed**" in (out / "summary.md").read_text()


def test_rerun_into_the_same_folder_resumes_where_it_failed(
    make_notebook, notebook_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_notebook("01_train", PARAMS, REPORT)
    make_notebook("02_fail", 'run_dir = "unset"', 'raise ValueError("not yet")')
    make_notebook("03_after", 'run_dir = "unset"', "z = 3")
    out = tmp_path / "run"
    with pytest.raises(BookError):
        run_book(out=out, notebook_dir=notebook_dir)
    first_train = (out / "01_train.ipynb").stat().st_mtime_ns
    capsys.readouterr()

    make_notebook("02_fail", 'run_dir = "unset"', "fixed = True")  # the user fixes the cause
    run_book(out=out, notebook_dir=notebook_dir)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/3] 01_train ... finished earlier, skipped"
    assert lines[1].startswith("[2/3] 02_fail ... ok (")
    assert lines[2].startswith("[3/3] 03_after ... ok (")
    assert (out / "01_train.ipynb").stat().st_mtime_ns == first_train
    results = read_json(out / "results.json")
    assert results["status"] == "ok"
    assert results["notebooks"]["01_train"]["skipped"] is True

    # other parameters, or --rerun, run everything again
    run_book(out=out, params={"temperature": 3.0}, notebook_dir=notebook_dir)
    assert capsys.readouterr().out.splitlines()[0].startswith("[1/3] 01_train ... ok (")
    run_book(out=out, params={"temperature": 3.0}, notebook_dir=notebook_dir, rerun=True)
    assert capsys.readouterr().out.splitlines()[0].startswith("[1/3] 01_train ... ok (")


def test_widget_callback_error_fails_the_run(
    make_notebook, notebook_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_notebook(
        "01_slider",
        "temperature = 1.0  # start value",
        """\
import ipywidgets as widgets
from IPython.display import display

slider = widgets.FloatSlider(value=temperature, min=0.5, max=5.0)

def show(T):
    if T > 2.0:
        raise ZeroDivisionError(f"temperature {T} broke the plot")
    print(T)

display(slider, widgets.interactive_output(show, {"T": slider}))
slider.value = 3.0
""",
    )
    with pytest.raises(BookError) as info:
        run_book(out=tmp_path / "run", notebook_dir=notebook_dir)
    assert str(info.value) == (
        "FAILED 01_slider cell 2 widget callback: ZeroDivisionError: temperature 3.0 broke the plot"
    )
    assert read_json(tmp_path / "run" / "results.json")["status"] == "failed"
    assert len(capsys.readouterr().err.splitlines()) == 1


def _widget_notebook(outputs: list[dict]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("display(box)", execution_count=7)
    view = {"model_id": "box1", "version_major": 2, "version_minor": 0}
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"application/vnd.jupyter.widget-view+json": view}
        )
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {
        WIDGET_STATE_MIME: {
            "state": {
                "box1": {
                    "model_name": "VBoxModel",
                    "state": {"children": ["IPY_MODEL_slider1", "IPY_MODEL_out1"]},
                },
                "slider1": {"model_name": "FloatSliderModel", "state": {"value": 3.0}},
                "out1": {"model_name": "OutputModel", "state": {"outputs": outputs}},
            },
            "version_major": 2,
            "version_minor": 0,
        }
    }
    return nb


def test_widget_errors_scans_saved_state(tmp_path: Path) -> None:
    error = {"output_type": "error", "ename": "KeyError", "evalue": "'T'\nmore", "traceback": []}
    stream = {"output_type": "stream", "name": "stdout", "text": "fine\n"}
    nb = _widget_notebook([stream, error])
    assert widget_errors(nb) == [{"cell": 7, "ename": "KeyError", "evalue": "'T'"}]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert widget_errors(path) == [{"cell": 7, "ename": "KeyError", "evalue": "'T'"}]
    assert widget_errors(_widget_notebook([stream])) == []
    assert widget_errors(nbformat.v4.new_notebook()) == []


def test_save_metrics_converts_and_validates(tmp_path: Path) -> None:
    path = save_metrics(
        tmp_path,
        "05_distillation",
        {
            "models": [
                {"model": "student (KD)", "accuracy_mean": np.float32(0.5), "params": np.int64(3)}
            ],
            "curve": np.arange(3),
            "nan": math.nan,
            "where": tmp_path,
        },
    )
    assert path == tmp_path / "metrics" / "05_distillation.json"
    data = json.loads(path.read_text())  # strict JSON: no NaN
    assert data["models"][0] == {"model": "student (KD)", "accuracy_mean": 0.5, "params": 3}
    assert data["curve"] == [0, 1, 2] and data["nan"] is None and data["where"] == str(tmp_path)
    assert not list((tmp_path / "metrics").glob(".*.tmp")), "written atomically, no leftovers"
    with pytest.raises(ValueError, match="notebook must be a notebook name"):
        save_metrics(tmp_path, "../escape", {})
    with pytest.raises(ValueError, match=r"metrics\['models'\] must be a list of dicts"):
        save_metrics(tmp_path, "02_teacher", {"models": {"teacher": 1}})


def test_write_results_without_a_book_run(tmp_path: Path) -> None:
    save_metrics(tmp_path, "02_teacher", {"models": [{"model": "teacher", "accuracy_mean": 90.0}]})
    save_metrics(
        tmp_path, "06_evaluation", {"models": [{"model": "teacher", "accuracy_mean": 80.0}]}
    )
    results = write_results(tmp_path)
    assert results["status"] == "ok" and results["notebooks"] == {}
    assert results["models"] == [{"model": "teacher", "accuracy_mean": 80.0}]  # later wins
    assert results["dataset"] is None
    summary = (tmp_path / "summary.md").read_text()
    assert "| teacher | – | 80.0 % | – | – | – | – | – |" in summary
    assert "No comparison was reported." in summary
    # a later call keeps what it is not told
    write_results(tmp_path, status="failed", notebooks={"02_teacher": {"status": "ok"}})
    assert write_results(tmp_path)["status"] == "failed"
    assert read_json(tmp_path / "results.json")["notebooks"] == {"02_teacher": {"status": "ok"}}


@pytest.mark.parametrize(
    ("mean", "ci", "expected"),
    [
        (0.03, 0.01, "KD helps"),
        (0.01, 0.01, "inside seed noise"),  # the interval touches 0
        (0.0, 0.0, "inside seed noise"),
        (-0.005, 0.01, "inside seed noise"),
        (-0.03, 0.01, "KD hurts"),
        (0.03, None, "–"),
        (None, 0.01, "–"),
        (math.nan, 0.01, "–"),
    ],
)
def test_verdict(mean, ci, expected: str) -> None:
    assert verdict(mean, ci) == expected


def test_number_formatting() -> None:
    assert human_count(11_173_962) == "11.2M"
    assert human_count(690) == "690"
    assert human_count(12_345) == "12.3k"
    assert human_count(2.5e9) == "2.5G"
    assert human_count(None) == "–" and human_count("x") == "–" and human_count(True) == "–"
    assert format_interval(93.4, 1.5) == "93.4 ± 1.5 %"
    assert format_interval(93.4, None) == "93.4 %"
    assert format_interval(-1.2, 0.4, signed=True, unit=" pt") == "-1.2 ± 0.4 pt"
    assert format_interval(None, 0.1) == "–"
    assert format_interval(62.6, 112.5, within=(0.0, 100.0)) == (
        "62.6 ± 112.5 % (too few seeds to say)"
    )
    assert format_interval(98.0, 2.5, within=(0.0, 100.0)).endswith("(too few seeds to say)")
    assert format_interval(93.4, 1.5, within=(0.0, 100.0)) == "93.4 ± 1.5 %"


def test_the_summary_sets_each_method_beside_its_notebooks_reference_method() -> None:
    per_seed = pd.DataFrame(
        {SCRATCH: [80.0, 81.0, 82.0], "logit KD": [88.0, 89.0, 90.0], "hint": [86.0, 87.5, 88.0]},
        index=pd.Index([0, 1, 2], name="seed"),
    )
    rows = Comparison.from_per_seed(per_seed, ["logit KD", "hint"], baseline="logit KD").rows()
    text = render_summary({"status": "ok", "comparisons": rows, "notebooks": {}})
    assert "| vs the reference |" in text
    hint = next(line for line in text.splitlines() if line.startswith("| – | hint |"))
    assert "| hint helps | logit KD: -1.8 ± 0.7 pt, worse |" in hint  # helps, yet worse than KD
    logit = next(line for line in text.splitlines() if line.startswith("| – | logit KD |"))
    assert "| logit KD helps | – | test |" in logit  # the reference itself: nothing beside it


def test_render_summary_escapes_table_cells() -> None:
    text = render_summary(
        {"status": "ok", "models": [{"model": "a|b", "arch": "x\ny"}], "notebooks": {}}
    )
    assert "| a\\|b | x y |" in text


def test_format_error_is_one_line() -> None:
    assert format_error(ValueError("seed must be an integer >= 0, got -1\nmore")) == (
        "seed must be an integer >= 0, got -1"
    )
    assert format_error(FileNotFoundError("no such file: x")) == (
        "FileNotFoundError: no such file: x"
    )
    assert format_error(BookError("FAILED 03_student cell 7: ValueError: x")) == (
        "FAILED 03_student cell 7: ValueError: x"
    )
    assert format_error(RuntimeError()) == "RuntimeError"


def test_dead_kernel_and_timeout_are_reported_by_cell(
    make_notebook, notebook_dir: Path, tmp_path: Path
) -> None:
    make_notebook("01_crash", "x = 1", "y = 2", "import os\nos._exit(1)")
    with pytest.raises(BookError, match=r"^FAILED 01_crash cell 3: DeadKernelError: Kernel died"):
        run_book(out=tmp_path / "crash", notebook_dir=notebook_dir)
    (notebook_dir / "01_crash.ipynb").unlink()

    make_notebook("01_slow", "x = 1", "y = 2", "import time\ntime.sleep(30)")
    with pytest.raises(BookError) as info:
        run_book(out=tmp_path / "slow", notebook_dir=notebook_dir, timeout=2)
    assert str(info.value) == (
        "FAILED 01_slow cell 3: CellTimeoutError: the cell ran longer than the timeout (2 s)"
    )
    assert (tmp_path / "slow" / "01_slow.ipynb").is_file()


def test_kernel_start_failure_is_retried_once(
    make_notebook, notebook_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kdbook.machinery.execute as runner

    make_notebook("01_train", PARAMS, REPORT)
    real, calls = runner._execute, []

    def flaky(*args, **kwargs):
        calls.append(Path(args[0]).stem)
        if len(calls) == 1:
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_execute", flaky)
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    run_book(out=tmp_path / "run", notebook_dir=notebook_dir)
    assert calls == ["01_train", "01_train"]
    assert read_json(tmp_path / "run" / "results.json")["status"] == "ok"

    calls.clear()
    monkeypatch.setattr(
        runner, "_execute", lambda *a, **k: (calls.append(Path(a[0]).stem), flaky_fail())[1]
    )

    def flaky_fail():
        raise RuntimeError("Kernel died before replying to kernel_info")

    with pytest.raises(BookError, match="^FAILED 01_train: RuntimeError: Kernel died before"):
        run_book(out=tmp_path / "run2", notebook_dir=notebook_dir)
    assert calls == ["01_train", "01_train"], "one retry, then the failure is reported"
