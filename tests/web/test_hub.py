"""The dashboard's one watch of the runs bucket, against a real nats-server that restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import open_bus
from sortie.client.client import Client
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.web.hub import Hub
from tests.builders import record


async def _next(runs: AsyncIterator[m.RunRecord], timeout: float = 20) -> m.RunRecord | None:
    with contextlib.suppress(StopAsyncIteration):
        return await asyncio.wait_for(anext(runs), timeout)
    return None


async def _written_and_seen(client: Client, hub: Hub, run_id: str) -> m.RunRecord | None:
    """Write a record while a page follows the hub; what that page sees first (None: its
    stream ended, and a page then reloads)."""
    runs = hub.runs()
    pending = asyncio.ensure_future(_next(runs))
    await asyncio.sleep(0.2)  # the page is subscribed before the write
    await client.bus.runs.put(run_id, codec.encode(record(run_id, RunState.RUNNING)))
    try:
        return await pending
    finally:
        await runs.aclose()


async def test_pages_see_writes_and_the_watch_survives_a_broker_restart(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(tmp_path / "nats", port=port, sync_always=False)
    bus = await open_bus(broker.url, "test", create=True)
    client = Client(bus)
    hub = Hub(client)
    hub.start()
    try:
        seen = await _written_and_seen(client, hub, "exp_1_aaaa0001")
        assert seen is not None and seen.run_id == "exp_1_aaaa0001"
        assert seen.state is RunState.RUNNING

        broker.stop()
        broker = start_broker(tmp_path / "nats", port=port, sync_always=False)
        # once the client is back, a page that (re)subscribes sees new writes again
        for _ in range(100):
            if client.bus.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        seen = None
        for attempt in range(20):  # bounded: the watch is made again within a second or so
            seen = await _written_and_seen(client, hub, f"exp_1_bbbb{attempt:04d}")
            if seen is not None:
                break
        assert seen is not None and seen.run_id.startswith("exp_1_bbbb")
    finally:
        await hub.stop()
        await bus.close()
        broker.stop()
