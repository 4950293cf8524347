"""kdbook.machinery.kernel: the book's kernel client looks for each message in short waits."""

from __future__ import annotations

import asyncio
from queue import Empty

import pytest

from kdbook.machinery import kernel


def test_a_message_that_came_is_returned_at_the_next_look(monkeypatch) -> None:
    monkeypatch.setattr(kernel, "LOOK_SECONDS", 0.01)
    waits = []

    async def get_msg(timeout):
        waits.append(timeout)
        if len(waits) < 3:
            raise Empty  # the message is there, but this wait did not see it
        return {"msg_type": "execute_reply"}

    msg = asyncio.run(kernel.get_msg_in_slices(get_msg, None))  # no limit: look until it comes
    assert msg == {"msg_type": "execute_reply"}
    assert waits == [0.01, 0.01, 0.01]


def test_the_whole_timeout_still_holds(monkeypatch) -> None:
    monkeypatch.setattr(kernel, "LOOK_SECONDS", 0.02)
    waits = []

    async def never(timeout):
        waits.append(timeout)
        await asyncio.sleep(timeout)
        raise Empty

    with pytest.raises(Empty):
        asyncio.run(kernel.get_msg_in_slices(never, 0.05))
    assert 2 <= len(waits) <= 4 and all(w <= 0.02 for w in waits)
    assert sum(waits) == pytest.approx(0.05, abs=0.02)


def test_the_book_runs_its_kernels_with_the_sliced_client() -> None:
    from jupyter_client.manager import AsyncKernelManager

    manager = kernel.kernel_manager_class()
    assert issubclass(manager, AsyncKernelManager)
    client = manager().client()
    assert client.shell_channel_class.__name__ == "SlicedChannel"
    assert client.iopub_channel_class.__name__ == "SlicedChannel"
