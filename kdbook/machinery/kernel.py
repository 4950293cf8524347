"""The Jupyter kernel manager that ``kdbook book`` runs notebooks with.

It is jupyter_client's ``AsyncKernelManager`` with one change. Its client waits for a
kernel's message in slices of :data:`LOOK_SECONDS` instead of one long wait. A reply can
sit unseen on the socket until a long wait runs out: nbclient issue #312, "when cell
contains ipywidget, execute cell will sometimes block". Here a slider cell of 07_tuning
finished in a second, and then papermill sat idle until the 900 s cell timeout, with both
processes idle. Looking again every second finds such a message at most a second late;
every other message arrives as before.
"""

from __future__ import annotations

import functools
import time
from queue import Empty
from typing import Any

KERNEL_NAME = "python3"  # the Jupyter kernel every notebook of the book runs in
LOOK_SECONDS = 1.0  # the longest single wait for a kernel message


async def get_msg_in_slices(get_msg: Any, timeout: float | None) -> dict[str, Any]:
    """``await get_msg(timeout=...)`` in waits of at most :data:`LOOK_SECONDS` until a
    message comes or ``timeout`` seconds (None: no limit) have passed (then ``Empty``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        step = LOOK_SECONDS if left is None else min(LOOK_SECONDS, left)
        try:
            return await get_msg(timeout=step)
        except Empty:
            if left is not None and left <= LOOK_SECONDS:
                raise


@functools.cache
def kernel_manager_class() -> type:
    """``AsyncKernelManager`` whose clients look for messages in slices (built on first use,
    so that importing kdbook does not import jupyter_client)."""
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from jupyter_client.client import KernelClient
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Type

    class SlicedChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
            return await get_msg_in_slices(super().get_msg, timeout)

    class SlicedClient(AsyncKernelClient):
        shell_channel_class = Type(SlicedChannel)
        iopub_channel_class = Type(SlicedChannel)
        control_channel_class = Type(SlicedChannel)

    class SlicedKernelManager(AsyncKernelManager):
        client_factory = Type(SlicedClient, klass=KernelClient)

    return SlicedKernelManager
