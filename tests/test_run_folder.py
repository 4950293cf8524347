"""One writer per run folder: nbval leaves a book as it was written, a second book or sweep
refuses (or waits), a dead writer's lock is taken over. Real processes, no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_notebook

from kdbook.machinery.runfolder import (
    LOCK_FILE,
    RunFolderBusy,
    hold,
    holder,
    newer_than_summary,
    writable_run_dir,
)

BIN = Path(sys.executable).parent
HOLDER = (  # a process that holds a run folder until it is killed
    "import sys, time\n"
    "from kdbook.machinery.runfolder import hold\n"
    "with hold(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)

SLOW = (
    "import time\n"
    "from kdbook.config import config_from\n"
    "from kdbook.report import save_metrics\n"
    "cfg = config_from(globals())\n"
    "time.sleep(seconds)\n"
    "save_metrics(cfg.run_dir, 'slow', {'value': seconds})"
)


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha1 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def slow_notebook(tmp_path: Path) -> Path:
    return write_notebook(
        tmp_path / "nb" / "slow.ipynb",
        'run_dir: str = "runs/lab"  # the run folder\nseconds: float = 0.0  # work time',
        SLOW,
        "# NBVAL_CHECK_OUTPUT\nprint(1 + 1)",
    )


def kdbook(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "kdbook"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_lock(folder: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while holder(folder) is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first process never took the lock"
        time.sleep(0.1)


def test_nbval_leaves_an_executed_book_as_written(tmp_path):
    """The README's nbval line re-executes every cell of a real chapter yet changes no file
    of the run folder (its figures and metrics are written to a private copy)."""
    run = tmp_path / "run"
    book = subprocess.run(
        [str(BIN / "kdbook"), "book", "--only", "04_loss", "--out", str(run)],
        capture_output=True,
        text=True,
    )
    assert book.returncode == 0, book.stdout + book.stderr
    before = folder_digest(run)
    assert any(name.startswith("figures/") for name in before)
    assert any(name.startswith("metrics/") for name in before)
    check = subprocess.run(
        [str(BIN / "pytest"), "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider"]
        + [str(p) for p in sorted(run.glob("*.ipynb"))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout[-3000:]
    assert " passed" in check.stdout
    assert folder_digest(run) == before
    assert newer_than_summary(run) == []


def test_a_second_book_refuses_then_waits(tmp_path):
    notebook, run = slow_notebook(tmp_path), tmp_path / "run"
    args = ("book", "--only", str(notebook), "--out", str(run))
    first = kdbook(*args, "-p", "seconds", "6")
    try:
        wait_for_lock(run, first)
        second = kdbook(*args, "-p", "seconds", "0")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert first.poll() is None  # refused while the first still runs
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert str(run) in lines[0] and f"pid {first.pid}" in lines[0]
        assert "kdbook book" in lines[0] and "since" in lines[0] and "--wait" in lines[0]

        waiting = kdbook(*args, "-p", "seconds", "0", "--wait")
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, out + err
        assert first.poll() is not None  # it finished after the first one
        assert f"waiting for pid {first.pid}" in out
        assert first.wait() == 0
    finally:
        first.kill()
    assert not (run / LOCK_FILE).exists()


def test_a_second_sweep_refuses(tmp_path):
    notebook, out = slow_notebook(tmp_path), tmp_path / "sweep"
    first = kdbook("sweep", str(notebook), "--grid", "seconds=6", "--out", str(out))
    try:
        wait_for_lock(out, first)
        second = kdbook("sweep", str(notebook), "--grid", "seconds=0", "--out", str(out))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1 and "is being written by" in err
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


def test_a_dead_writers_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"held"
    with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
        with hold(run):
            pass
    os.kill(proc.pid, signal.SIGKILL)  # no chance to release anything
    proc.wait()
    assert holder(run).pid == proc.pid  # its lock file is still there
    with hold(run):
        line = capsys.readouterr().out
        assert f"took over the lock of pid {proc.pid}" in line
        assert holder(run).pid == os.getpid()
    assert not (run / LOCK_FILE).exists()


def test_a_notebook_writes_a_private_copy_while_another_process_writes(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    (run / "metrics" / "01.json").write_text("{}")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"held"
        where = Path(writable_run_dir(run))
        assert where != run and (where / "metrics" / "01.json").is_file()
        assert f"pid {proc.pid}" in capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait()


def test_a_lab_notebook_writes_its_own_folder(tmp_path, monkeypatch, capsys):
    """No book holds runs/lab and the notebook is not an executed copy inside it: the kernel
    writes there, cell after cell, and says nothing."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert writable_run_dir("runs/lab") == "runs/lab"
    with hold(tmp_path / "runs" / "lab"):  # its own book's kernels write it too
        assert writable_run_dir(tmp_path / "runs" / "lab") == str(tmp_path / "runs" / "lab")
    assert capsys.readouterr().out == ""


def test_files_newer_than_the_summary_are_named(tmp_path, capsys):
    from kdbook.cli import main

    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    for name in ("summary.md", "results.json"):
        (run / name).write_text(json.dumps({}))
    (run / "x.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                             "nbformat_minor": 5}))  # fmt: skip
    figure = run / "figures" / "05_x.png"
    figure.write_bytes(b"png")
    later = time.time() + 5
    os.utime(figure, (later, later))
    assert newer_than_summary(run) == [figure]
    assert main(["html", str(run)]) == 0
    note = capsys.readouterr().out.splitlines()[0]
    assert "newer than its summary.md" in note and "figures/05_x.png" in note
