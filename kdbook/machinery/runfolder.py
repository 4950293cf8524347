"""One writer per run folder: the lock that ``kdbook book`` and ``kdbook sweep`` hold, and
where a notebook writes when it is not that writer.

A book or sweep holds ``DIR/.kdbook-writer.lock`` while it writes ``DIR`` (:func:`hold`):
an advisory lock of the operating system (``fcntl.flock``), so a writer that dies, even by
``kill -9`` or a closed laptop's lost process, releases it with its last breath; the file
names the holder (pid, command, since when) for the one-line refusal a second writer gets.
The notebooks a holder runs inherit its token (environment variable :data:`WRITER_ENV`).

A notebook's configuration cell asks :func:`writable_run_dir` where to write. It writes the
run folder itself, unless the folder is another live process's (a book still running), or
the notebook is an executed copy being run again inside the folder (nbval checking a book,
a reader re-running ``runs/ci/05_distillation.ipynb``): then it writes to a private copy of
the folder in the temporary directory, removed when the kernel exits, and says so in one
line. Checking a book therefore leaves it byte for byte as the book wrote it. A notebook in
JupyterLab on ``runs/lab`` (its own folder, no book running there) writes as before.

>>> with hold("runs/ci"):  # doctest: +SKIP
...     run_the_book()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

LOCK_FILE = ".kdbook-writer.lock"
WRITER_ENV = "KDBOOK_WRITER"  # the token of the book or sweep that started this process
POLL_SECONDS = 0.5
COPY_PREFIX = "kdbook-copy-"  # private copies: COPY_PREFIX<pid>-<folder name>-<random>
# What a private copy of a run folder leaves out: the executed notebooks and the HTML book
# (a notebook reads neither), and the lock.
NOT_COPIED = ("*.ipynb", "html", LOCK_FILE, ".*.tmp")


class RunFolderBusy(RuntimeError):
    """Another live process is writing the run folder; ``str(error)`` is the one line."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a run folder: read from its lock file."""

    pid: int
    command: str
    since: str
    host: str
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command}) since {self.since}"

    def alive(self) -> bool:
        """Whether the holding process still runs (on another host: assumed so)."""
        return self.host != socket.gethostname() or _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def holder(folder: str | os.PathLike) -> Holder | None:
    """The holder recorded in ``folder``'s lock file, else None (no lock, or unreadable)."""
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
        return Holder(**{f.name: data[f.name] for f in dataclasses.fields(Holder)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _busy(folder: Path, who: str) -> str:
    return (
        f"run folder {folder} is being written by {who}: wait for it to finish "
        "(--wait waits), or choose another --out"
    )


def _command_line() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    words = [name, *sys.argv[1:]]
    text = " ".join(words)
    return text if len(text) <= 120 else text[:117] + "..."


def _try_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting; False when another process has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_locked(path: Path) -> int | None:
    """Open ``path`` (created if missing) and lock it; None when another process holds it.

    The file is removed on release, so a lock taken on a file that was removed meanwhile is
    on a stale inode: then try again with the file now at ``path``.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold(folder: str | os.PathLike, *, wait: bool = False) -> Iterator[Path]:
    """Be the one writer of ``folder`` (created when missing) until the block ends.

    Re-entrant in one process (``run_book`` inside ``kdbook book``). Processes started
    inside the block inherit the token that makes them this writer's.

    Args:
        folder: the run or sweep folder.
        wait: when another live process holds it, wait for it instead of refusing.

    Raises:
        RunFolderBusy: another live process holds ``folder`` and ``wait`` is False; the
            message names the folder, the holder (pid, command, since when) and ``--wait``.
    """
    folder = Path(folder).resolve()
    current = holder(folder)
    if (
        current is not None
        and current.pid == os.getpid()
        and current.token == os.environ.get(WRITER_ENV)
    ):
        yield folder  # this process holds it already
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    announced = False
    while (fd := _open_locked(path)) is None:
        busy = holder(folder)
        who = busy.describe() if busy else "another process"
        if not wait:
            raise RunFolderBusy(_busy(folder, who))
        if not announced:
            print(f"waiting for {who} to finish writing {folder} ...", flush=True)
            announced = True
        time.sleep(POLL_SECONDS)
    try:
        stale = holder(folder)
        if stale is not None:
            print(
                f"run folder {folder}: took over the lock of {stale.describe()}, which "
                "ended without releasing it",
                flush=True,
            )
        mine = Holder(
            pid=os.getpid(),
            command=_command_line(),
            since=datetime.now().astimezone().isoformat(timespec="seconds"),
            host=socket.gethostname(),
            token=uuid.uuid4().hex,
        )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(dataclasses.asdict(mine)) + "\n").encode())
        previous_token = os.environ.get(WRITER_ENV)
        os.environ[WRITER_ENV] = mine.token
        try:
            yield folder
        finally:
            if previous_token is None:
                os.environ.pop(WRITER_ENV, None)
            else:
                os.environ[WRITER_ENV] = previous_token
            with contextlib.suppress(OSError):  # Windows: open files cannot be removed
                path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the OS lock


def refuse_if_busy(folder: str | os.PathLike) -> None:
    """Raise :class:`RunFolderBusy` at once when a live process other than this one holds
    ``folder``: the check a command makes before its slower checks of the input."""
    owner = holder(folder)
    if owner is not None and owner.pid != os.getpid() and owner.alive():
        raise RunFolderBusy(_busy(Path(folder).resolve(), owner.describe()))


# --------------------------------------------------------------------------- notebooks


def _reason_not_to_write(folder: Path) -> str | None:
    """Why a notebook in this process must not write ``folder`` (None: it may)."""
    mine = os.environ.get(WRITER_ENV)
    for candidate in (folder, *folder.parents):  # a sweep holds the folder above its points
        owner = holder(candidate)
        if owner is not None and owner.alive():
            if owner.token == mine:
                return None
            return f"is being written by {owner.describe()}"
    with contextlib.suppress(OSError):
        if Path.cwd().resolve() == folder:
            return "is the folder of this executed notebook (checking a book never rewrites it)"
    return None


_COPIES: dict[Path, Path] = {}


def _remove_orphaned_copies() -> None:
    """Remove the private copies of processes that have ended (a kernel that was killed
    never ran its exit handlers)."""
    for path in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*"):
        pid = path.name[len(COPY_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _copy_if_there(source: str, target: str) -> None:
    """Copy a file the writer may be replacing or removing right now (gone: skipped)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(source, target)


def private_copy(folder: Path) -> Path:
    """A copy of ``folder`` in the temporary directory (what a notebook reads: checkpoints,
    logits, metrics; not the executed notebooks or the HTML), removed when the process exits.
    One copy per folder and process."""
    if folder in _COPIES:
        return _COPIES[folder]
    _remove_orphaned_copies()
    scratch = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-{folder.name}-"))
    atexit.register(shutil.rmtree, scratch, True)  # a kernel shut down gently
    if folder.is_dir():
        shutil.copytree(
            folder,
            scratch,
            ignore=shutil.ignore_patterns(*NOT_COPIED),
            copy_function=_copy_if_there,
            dirs_exist_ok=True,
        )
    _COPIES[folder] = scratch
    return scratch


def writable_run_dir(run_dir: str | os.PathLike) -> str:
    """Where a notebook with this ``run_dir`` writes: ``run_dir`` itself, or a private copy
    (with a printed line saying why) when another process writes it or the notebook is an
    executed copy running inside it. Called by :func:`kdbook.config.config_from`."""
    folder = Path(run_dir).expanduser().resolve()
    reason = _reason_not_to_write(folder)
    if reason is None:
        return str(run_dir)
    scratch = private_copy(folder)
    print(
        f"run_dir {folder} {reason}: this kernel reads a copy of it and writes to {scratch} "
        "(removed when the kernel exits)"
    )
    return str(scratch)


def newer_than_summary(run_dir: str | os.PathLike) -> list[Path]:
    """Files in ``run_dir/figures`` and ``run_dir/metrics`` newer than its summary.md or
    results.json (written after the book's summary: by another writer)."""
    run_dir = Path(run_dir)
    built = [run_dir / "summary.md", run_dir / "results.json"]
    if not all(p.is_file() for p in built):
        return []
    since = min(p.stat().st_mtime for p in built)
    files = [p for sub in ("figures", "metrics") for p in sorted((run_dir / sub).glob("*"))]
    return [p for p in files if p.is_file() and p.stat().st_mtime > since]


def stale_line(run_dir: str | os.PathLike) -> str | None:
    """One line naming the figures and metrics newer than the run folder's summary, or None."""
    newer = newer_than_summary(run_dir)
    if not newer:
        return None
    names = ", ".join(f"{p.parent.name}/{p.name}" for p in newer[:4])
    more = f" and {len(newer) - 4} more" if len(newer) > 4 else ""
    return (
        f"note: {len(newer)} file(s) in {run_dir} are newer than its summary.md ({names}{more}): "
        "written after the book by another process; run the book again to rebuild them"
    )
