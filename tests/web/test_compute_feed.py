"""The compute feed against a real `sortie up`: every open page gets the same snapshots from
one poller, a change reaches each of them, and the poller stops when the last page leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.client.client import Client
from sortie.web.compute_data import ComputeSnapshot
from sortie.web.compute_feed import compute_feed, read
from tests.web.conftest import Dashboard


async def until(pages: AsyncIterator[ComputeSnapshot], wanted: str) -> ComputeSnapshot:
    """The first snapshot a page gets that lists the cluster ``wanted`` (bounded: 30 s)."""
    async with asyncio.timeout(30):
        async for snap in pages:
            if any(c.name == wanted for c in snap.clusters):
                return snap
    raise AssertionError("the feed ended")


async def test_two_pages_share_one_poller_and_both_see_a_new_cluster(
    dashboard: Dashboard,
) -> None:
    client = await Client.connect(dashboard.url, creds=dashboard.client_creds)
    feed = compute_feed(client)
    first, second = feed.follow(), feed.follow()
    try:
        async with asyncio.timeout(30):
            one = await anext(first)
            two = await anext(second)
        assert one == two and one.error is None
        assert one.targets[0].name == "local"
        poller = feed._task
        created = await asyncio.to_thread(
            dashboard.cli,
            "compute",
            "create",
            "feed-pool",
            "--vm-size",
            "local_small",
            "--max-nodes",
            "1",
        )
        assert created.returncode == 0, created.stderr
        seen = await asyncio.gather(until(first, "feed-pool"), until(second, "feed-pool"))
        assert all(s.clusters[0].max_nodes == 1 for s in seen)
        assert feed._task is poller and poller is not None and not poller.done()
        await first.aclose()
        await second.aclose()
        # no page left: the poller is stopped (nothing asks the scheduler any more)
        assert feed._task is None
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        assert poller.done()
    finally:
        await asyncio.to_thread(dashboard.cli, "compute", "delete", "feed-pool")
        await client.close()


async def test_without_a_scheduler_the_snapshot_says_so_and_polling_goes_on(
    broker: BrokerProcess, bus: Bus
) -> None:
    client = await Client.connect(broker.url)  # the store exists (``bus``), no scheduler runs
    try:
        feed = compute_feed(client)
        snap = await read(client)
        assert snap.targets == [] and snap.error is not None
        assert "no scheduler is answering" in snap.error
        pages = feed.follow()
        async with asyncio.timeout(30):
            pushed = await anext(pages)
        assert pushed.error == snap.error
        await pages.aclose()
    finally:
        await client.close()
