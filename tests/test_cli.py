"""The kdbook command: help, value parsing, one-line errors and exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kdbook.machinery.selection
from kdbook.cli import main, parse_value

PARAMS = """\
temperature: float = 4.0  # softening temperature
seed = 0  # random seed
run_dir = "unset"  # the run folder
"""


@pytest.fixture
def book_dir(make_notebook, notebook_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the command at two fixture notebooks instead of the book."""
    make_notebook(
        "01_first",
        PARAMS,
        "from kdbook.report import save_metrics\n"
        'save_metrics(run_dir, "01_first", {"models": [{"model": "teacher", '
        '"accuracy_mean": 0.5}], "config": {"temperature": temperature, "seed": seed}})',
    )
    make_notebook("02_second", 'run_dir = "unset"', 'raise KeyError("missing checkpoint")')
    monkeypatch.setattr(kdbook.machinery.selection, "NOTEBOOK_DIR", notebook_dir)
    return notebook_dir


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("-1", -1),
        ("2.5", 2.5),
        ("1e-3", 1e-3),
        ("True", True),
        ("False", False),
        ("None", None),
        ("true", "true"),
        ("cifar10", "cifar10"),
        ("imagefolder:data/chest_xray", "imagefolder:data/chest_xray"),
        ("cuda:0", "cuda:0"),
        ("[0.3, 1.0]", [0.3, 1.0]),
        ("['mnist_student', 'digits_teacher']", ["mnist_student", "digits_teacher"]),
    ],
)
def test_parse_value_like_papermill(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_a_malformed_list_value_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'\[resnet8\]' is not a list .* accepted"):
        parse_value("[resnet8]")  # names unquoted


def test_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "book" in text and "params" in text and "examples:" in text
    assert main(["book", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--out", "--only", "-p NAME VALUE", "--timeout", "kdbook book --only 04_loss"):
        assert option in text


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["book", "-p", "temperature"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("kdbook: error: argument -p/--parameter")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("kdbook: error: the following arguments are required")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "temperature", "-1"], "kdbook: error: temperature must be a number > 0, got -1"),
        (["-p", "seed", "1.5"], "kdbook: error: seed must be an integer >= 0, got 1.5"),
        (["-p", "temprature", "2"], "kdbook: error: unknown parameter 'temprature'"),
        (["--only", "09_x"], "kdbook: error: unknown notebook '09_x'; known notebooks: 01_first"),
    ],
)
def test_bad_input_returns_2_with_one_line(
    book_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    assert main(["book", "--out", str(out), *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_book_runs_and_reports(
    book_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["book", "--only", "01", "-p", "temperature", "2", "--out", "runs/t2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[1/1] 01_first ... ok (")
    assert out[1:] == [
        "run folder: runs/t2",
        f"summary:    {Path('runs/t2/summary.md')}",
        f"html book:  {Path('runs/t2/html/index.html')}",
    ]
    assert Path("runs/t2/html/index.html").is_file()
    config = kdbook.io.read_json(tmp_path / "runs/t2/results.json")["config"]
    assert config == {"temperature": 2, "seed": 0}


def test_notebook_failure_returns_1(
    book_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["book", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("FAILED 02_second cell 3: KeyError: 'missing checkpoint'")


def test_params_lists_declared_parameters(
    book_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["params", "01"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "01_first",
        "  temperature: float = 4.0  # softening temperature",
        "  seed: int = 0  # random seed",
        '  run_dir: str = "unset"  # the run folder',
    ]
    assert main(["params"]) == 0
    assert '02_second\n  run_dir: str = "unset"' in capsys.readouterr().out
    assert main(["params", "nope"]) == 2


def test_console_command_errors_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kdbook.cli", "book", "--timeout", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "kdbook: error: timeout must be an integer number of seconds > 0, got 0"
    ]
