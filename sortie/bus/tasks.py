"""Stopping a task for sure."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

STOP_RETRY_S = 1.0  # how long a stop waits before it cancels the task again


async def stop_task(task: asyncio.Task[Any], *, every_s: float = STOP_RETRY_S) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``every_s``;
    then raise what it raised, unless that is the cancel.

    One cancel is not always enough: on Python 3.11 ``asyncio.wait_for`` (under nats-py's
    fetches and requests) loses a cancel that arrives as its timeout fires, and a loop around
    it then runs on. After a SIGSTOP, both come at once (a deposed scheduler that resumed
    hung in its stop, waiting for its run index feed)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
