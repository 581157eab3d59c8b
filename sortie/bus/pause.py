"""The one way a retry loop waits before trying again.

nats-py turns a cancel of a wait on a closed connection into ``ConnectionClosedError``
(``Subscription.next_msg``), so a loop that retries on that error would swallow its own
task's cancel and spin for ever after a stop. ``retry_pause`` re-raises the cancel first.
"""

from __future__ import annotations

import asyncio


def raise_if_canceled() -> None:
    """Raise ``CancelledError`` if the running task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def retry_pause(seconds: float) -> None:
    """Wait ``seconds`` before a retry, unless the task was canceled (then raise the cancel)."""
    raise_if_canceled()
    await asyncio.sleep(seconds)
