"""What `make test` runs after lint: the unit tests, the book and nbval, sharing the cores.

The book (`kdbook book`) runs its notebooks in order on one core. The unit tests run next to
it. nbval checks each executed copy as soon as the book has finished that notebook and a core
is free, so the checks of the early chapters run while the book is still on the late ones.
Each of these processes trains on one thread (``threads='auto'``), so on two cores the whole
takes about as long as the book plus the checks of its last notebooks.

    python tests/make_test.py RUN_DIR

Exit status 0 when the unit tests, the book and every notebook's nbval passed; 1 otherwise,
with one line per failure. The unit tests' log is printed at the end, each nbval log where it
failed (all logs stay under ``RUN_DIR-logs/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
POLL_SECONDS = 2.0
CELL_TIMEOUT = 600  # seconds a cell of the book may run


def finished_notebooks(run_dir: Path) -> list[str]:
    """Notebooks the book has finished so far, in book order (from its results.json)."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return []
    notebooks = results.get("notebooks") or {}
    return [name for name, record in notebooks.items() if record.get("status") == "ok"]


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha1 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def rewritten(run_dir: Path, as_written: dict[str, str]) -> list[str]:
    """Failures when checking the book changed its folder: a file added, removed or changed
    since the book finished, or a figure or metric newer than summary.md."""
    from kdbook.machinery.runfolder import newer_than_summary

    now = folder_digest(run_dir)
    changed = sorted(k for k in as_written.keys() | now.keys() if as_written.get(k) != now.get(k))
    failures = [f"{run_dir}/{name} changed after the book finished" for name in changed]
    failures += [f"{path} is newer than summary.md" for path in newer_than_summary(run_dir)]
    return failures


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main(run_dir: Path) -> int:
    logs = run_dir.with_name(run_dir.name + "-logs")
    for path in (run_dir, logs):
        shutil.rmtree(path, ignore_errors=True)
    logs.mkdir(parents=True)
    unit_log = logs / "unit-tests.log"
    t0 = time.perf_counter()

    def elapsed() -> str:
        return f"{(time.perf_counter() - t0) / 60:.1f} min"

    with unit_log.open("w") as out:
        unit = subprocess.Popen([BIN / "pytest", "tests"], stdout=out, stderr=subprocess.STDOUT)
    # A classroom cell takes seconds to a couple of minutes: fail a stuck one after 10
    # minutes instead of the default 15.
    book = subprocess.Popen(
        [BIN / "kdbook", "book", "--out", str(run_dir), "--timeout", str(CELL_TIMEOUT)]
    )
    running: dict[str, tuple[subprocess.Popen, float]] = {}  # notebook -> nbval, start
    checked: dict[str, int] = {}  # notebook -> nbval's exit status
    failures: list[str] = []
    unit_rc = book_rc = None
    while True:
        if unit_rc is None and (unit_rc := unit.poll()) is not None:
            print(f"[make test] unit tests exit {unit_rc} after {elapsed()}", flush=True)
            if unit_rc:
                failures.append(f"unit tests exit {unit_rc} (log: {unit_log})")
        if book_rc is None and (book_rc := book.poll()) is not None:
            print(f"[make test] kdbook book exit {book_rc} after {elapsed()}", flush=True)
            if book_rc:
                failures.append(f"kdbook book exit {book_rc}")
            as_written = folder_digest(run_dir)  # nbval must leave the book as it wrote it
        for name, (proc, start) in list(running.items()):
            if (rc := proc.poll()) is None:
                continue
            del running[name]
            checked[name] = rc
            verdict = "ok" if rc == 0 else f"FAILED (exit {rc})"
            print(
                f"[make test] nbval {name}: {verdict} in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
            if rc:
                failures.append(f"nbval {name} exit {rc} (log: {logs / name}.log)")
        busy = (book_rc is None) + (unit_rc is None) + len(running)
        waiting = [n for n in finished_notebooks(run_dir) if n not in checked and n not in running]
        while waiting and busy < cores():
            name = waiting.pop(0)
            with (logs / f"{name}.log").open("w") as out:
                proc = subprocess.Popen(
                    [
                        BIN / "pytest",
                        "--nbval-lax",
                        "--nbval-current-env",
                        "-p",
                        "no:cacheprovider",
                        str(run_dir / f"{name}.ipynb"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running[name] = (proc, time.perf_counter())
            busy += 1
        if book_rc is not None and unit_rc is not None and not running and not waiting:
            break
        time.sleep(POLL_SECONDS)

    if book_rc == 0:
        failures += rewritten(run_dir, as_written)

    print(f"--- pytest tests ({unit_log}) ---")
    print(unit_log.read_text(), end="")
    for name in (n for n, rc in checked.items() if rc):
        print(f"--- nbval {name} ({logs / name}.log) ---")
        print((logs / f"{name}.log").read_text(), end="")
    if failures:
        print(f"make test: {len(failures)} failed after {elapsed()}:")
        for line in failures:
            print(f"  {line}")
        return 1
    print(
        f"make test: unit tests, the book and nbval of {len(checked)} notebooks passed "
        f"in {elapsed()}"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
