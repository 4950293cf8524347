"""What `make test` runs after lint: the unit tests, the books and nbval, sharing the cores.

The classroom book (`kdbook book`) runs its notebooks in order on one core. The unit tests
run next to it. nbval checks each executed copy as soon as the book has finished that
notebook and a core is free, so the checks of the early chapters run while the book is still
on the late ones. Then, whenever a core is free and no nbval waits, the other presets run the
whole book on data they accept (``tests/preset_books.py``: ``imagefolder`` on a two-class
and a five-class tree of JPEG files, ``cifar10`` on SYNTHETIC CIFAR-shaped images), into
``RUN_DIR-<preset book>``; each must finish every notebook. Each of these processes trains
mostly on one thread (``threads='auto'``).

    python tests/make_test.py RUN_DIR

Exit status 0 when the unit tests, every book and every notebook's nbval passed, and nbval
left the classroom book's folder as the book wrote it; 1 otherwise, with one line per
failure. The unit tests' log is printed at the end, each failed log too (all logs stay
under ``RUN_DIR-logs/``), and each book's time.
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

from preset_books import extra_books

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


def summary_disagreements(run_dir: Path) -> list[str]:
    """Failures where summary.md does not carry a verdict a notebook saved: every comparison
    row of ``metrics/*.json`` must be a row of summary.md with its notebook, setting, method
    and verdict, and with its verdict against the notebook's reference method where it has
    one."""
    from kdbook.report import method_verdict

    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    lines = [line for line in summary.splitlines() if line.startswith("| ")]
    failures = []
    for path in sorted((run_dir / "metrics").glob("*.json")):
        for row in json.loads(path.read_text()).get("comparisons") or []:
            method = row.get("method", "KD")
            word = row.get("verdict") or method_verdict(
                method, row.get("gain_mean"), row.get("gain_ci95")
            )
            cells = [f"| {path.stem} | {row.get('setting')} | {method} |", f"| {word} |"]
            if row.get("reference"):  # and its verdict against the notebook's reference method
                cells.append(f"| {row['reference']}: ")
                cells.append(f", {row.get('vs_reference')} |")
            if not any(all(cell in line for cell in cells) for line in lines):
                failures.append(
                    f"summary.md lacks {path.stem}'s row {row.get('setting')!r}: {word}"
                )
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
    book_started = time.perf_counter()
    extra = extra_books(run_dir.with_name(run_dir.name + "-data"))
    extra_running: dict[str, tuple[subprocess.Popen, float]] = {}
    extra_done: dict[str, tuple[int, float]] = {}  # book -> exit status, seconds
    while True:
        if unit_rc is None and (unit_rc := unit.poll()) is not None:
            print(f"[make test] unit tests exit {unit_rc} after {elapsed()}", flush=True)
            if unit_rc:
                failures.append(f"unit tests exit {unit_rc} (log: {unit_log})")
        if book_rc is None and (book_rc := book.poll()) is not None:
            print(f"[make test] kdbook book exit {book_rc} after {elapsed()}", flush=True)
            extra_done["classroom"] = (book_rc, time.perf_counter() - book_started)
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
        for name, (proc, start) in list(extra_running.items()):
            if (rc := proc.poll()) is None:
                continue
            del extra_running[name]
            extra_done[name] = (rc, time.perf_counter() - start)
            verdict = "ok" if rc == 0 else f"FAILED (exit {rc})"
            print(f"[make test] book {name}: {verdict} after {elapsed()}", flush=True)
            if rc:
                failures.append(f"kdbook book {name} exit {rc} (log: {logs / name}.log)")
        busy = (book_rc is None) + (unit_rc is None) + len(running) + len(extra_running)
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
        while extra and busy < cores() and not waiting:
            name, params = extra.popitem()
            out_dir = run_dir.with_name(f"{run_dir.name}-{name}")
            shutil.rmtree(out_dir, ignore_errors=True)
            with (logs / f"{name}.log").open("w") as out:
                proc = subprocess.Popen(
                    [BIN / "kdbook", "book", "--out", str(out_dir), *params]
                    + ["--timeout", str(CELL_TIMEOUT)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            extra_running[name] = (proc, time.perf_counter())
            busy += 1
        idle = not running and not waiting and not extra and not extra_running
        if book_rc is not None and unit_rc is not None and idle:
            break
        time.sleep(POLL_SECONDS)

    if book_rc == 0:
        failures += rewritten(run_dir, as_written)
        failures += summary_disagreements(run_dir)

    print(f"--- pytest tests ({unit_log}) ---")
    print(unit_log.read_text(), end="")
    for name in (n for n, rc in checked.items() if rc):
        print(f"--- nbval {name} ({logs / name}.log) ---")
        print((logs / f"{name}.log").read_text(), end="")
    for name in (n for n, (rc, _) in extra_done.items() if rc and n != "classroom"):
        print(f"--- kdbook book {name} ({logs / name}.log) ---")
        print((logs / f"{name}.log").read_text()[-6000:], end="")
    for name, (rc, seconds) in extra_done.items():
        print(f"[make test] book {name}: exit {rc}, {seconds / 60:.1f} min")
    if failures:
        print(f"make test: {len(failures)} failed after {elapsed()}:")
        for line in failures:
            print(f"  {line}")
        return 1
    print(
        f"make test: unit tests, {len(extra_done)} books ({', '.join(extra_done)}) and nbval "
        f"of {len(checked)} notebooks passed in {elapsed()}"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
