"""`kdbook doctor`: the environment table and its exit status."""

from __future__ import annotations

import kdbook.environment
from kdbook.cli import main
from kdbook.environment import FAIL, OK, EnvCheck


def test_doctor_prints_the_table_and_exits_0(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "device", "kernel python3", "data digits", "what to do"):
        assert name in out, out
    assert "kdbook book" in out and "notebooks in " in out


def test_doctor_exits_1_when_something_required_is_broken(capsys, monkeypatch):
    rows = [EnvCheck("torch", OK, "2.14.1"), EnvCheck("kernel python3", FAIL, "none", "install")]
    monkeypatch.setattr(kdbook.environment, "environment_report", lambda data_root: rows)
    assert main(["doctor", "--data", "elsewhere"]) == 1
    assert "broken: kernel python3" in capsys.readouterr().out


def test_doctor_help_mentions_exit_status(capsys):
    assert main(["doctor", "--help"]) == 0
    assert "Exit status" in capsys.readouterr().out
