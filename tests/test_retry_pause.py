"""Retry loops end when their task is canceled, even on a closed connection.

nats-py reports a cancel that reaches ``next_msg`` after the connection closed as
``ConnectionClosedError``: a loop retrying on that error swallowed its own stop (seen: a
scheduler's report and sweep-feed loops spinning after their daemon stopped, which hung the
test's teardown). Against a real broker."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import nats.errors
import pytest

from sortie.bus.broker import BrokerProcess
from sortie.bus.pause import retry_pause
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler


async def _waiting_loop(sub: nats.aio.subscription.Subscription, caught: list[str]) -> None:
    while True:
        try:
            await sub.next_msg(timeout=60)
        except nats.errors.ConnectionClosedError as exc:
            caught.append(repr(exc))
            await retry_pause(0.05)


async def test_a_cancel_turned_into_connection_closed_still_ends_the_loop(
    broker: BrokerProcess,
) -> None:
    nc = await nats.connect(broker.url)
    sub = await nc.subscribe("sortie.test.pause")
    caught: list[str] = []
    task = asyncio.create_task(_waiting_loop(sub, caught))
    await asyncio.sleep(0.1)  # the loop waits in next_msg
    await nc.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    # the cancel did arrive as nats-py's ConnectionClosedError: this is the case that spun
    assert caught and "ConnectionClosedError" in caught[0]


async def test_a_stopped_scheduler_leaves_no_task_running(broker: BrokerProcess, tmp_path) -> None:
    before = asyncio.all_tasks()
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = SchedulerConfig(url=broker.url, tick_s=0.2, data_dir=tmp_path / "scheduler")
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    await asyncio.sleep(1.0)  # anything canceled has had its turn to end
    left = [t for t in asyncio.all_tasks() - before if not t.done() and _ours(t)]
    assert left == [], [t.get_coro() for t in left]


def _ours(task: asyncio.Task[object]) -> bool:
    """A task running Sortie's code (nats-py leaves an ordered consumer's heartbeat check
    behind a closed connection: not ours to end)."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and "/sortie/" in code.co_filename
