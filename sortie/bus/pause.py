"""The one way a retry loop waits before trying again, and what it retries on.

nats-py turns a cancel of a wait on a closed connection into ``ConnectionClosedError``
(``Subscription.next_msg``), so a loop that retries on that error would swallow its own
task's cancel and spin for ever after a stop. ``retry_pause`` re-raises the cancel first.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

# what a broker call may raise while the broker (or the cluster's meta leader) is away for a
# while: a loop retries these after a pause, anything else is a bug or a refusal
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,  # reconnecting, with more to send than it holds
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


def raise_if_canceled() -> None:
    """Raise ``CancelledError`` if the running task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def retry_pause(seconds: float) -> None:
    """Wait ``seconds`` before a retry, unless the task was canceled (then raise the cancel)."""
    raise_if_canceled()
    await asyncio.sleep(seconds)
