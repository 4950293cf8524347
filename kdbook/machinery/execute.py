"""Executing one notebook with papermill: the kernel, the version stamp, one retry when the
kernel fails to start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdbook.machinery.errors import execution_started
from kdbook.machinery.kernel import KERNEL_NAME, kernel_manager_class


@contextlib.contextmanager
def _quiet_unconfigured_logging() -> Iterator[None]:
    """Silence papermill's logger (nbclient logs through it) unless logging is configured.

    Without handlers, Python prints its warnings and errors ("Kernel died while waiting for
    execute reply.") on stderr around our one-line report; with handlers, the user asked.
    """
    logger = logging.getLogger("papermill")
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _stamp_version(target: Path, source: Path) -> None:
    """Record in the executed notebook's metadata which kdbook ran it, from which file."""
    import nbformat

    from kdbook import __version__
    from kdbook.io import write_text

    if not target.is_file():
        return
    try:
        nb = nbformat.read(str(target), as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable partial notebook stays as it is
        return
    nb.metadata["kdbook"] = {"version": __version__, "source": str(source)}
    write_text(target, nbformat.writes(nb))


def _execute(source: Path, target: Path, parameters: dict[str, Any], timeout: int) -> None:
    """Run ``source`` into ``target`` with papermill, in the notebook's own folder."""
    import papermill

    with _quiet_unconfigured_logging(), _stamped(target, source):
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(source.parent),
            execution_timeout=timeout,
            kernel_manager_class=kernel_manager_class(),  # no reply left unseen (see .kernel)
            progress_bar=False,
            log_output=False,
            # The kernel's own log is noise here ("running over TCP without encryption", and
            # "KeyboardInterrupt caught in kernel" when jupyter_client interrupts it at
            # shutdown); errors in cells reach papermill as messages, not through this log.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )


@contextlib.contextmanager
def _stamped(target: Path, source: Path) -> Iterator[None]:
    """Stamp the executed notebook with kdbook's version when papermill is done with it,
    a partial (failed) one too."""
    try:
        yield
    finally:
        _stamp_version(target, source)


def execute_with_retry(
    source: Path, target: Path, parameters: dict[str, Any], timeout: int
) -> None:
    """Execute once; retry once when the kernel failed to start (no cell ran)."""
    from papermill.exceptions import PapermillExecutionError

    try:
        _execute(source, target, parameters, timeout)
    except PapermillExecutionError:
        raise
    except (RuntimeError, TimeoutError):
        if execution_started(target):
            raise
        time.sleep(1.0)
        _execute(source, target, parameters, timeout)
