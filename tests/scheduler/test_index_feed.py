"""The run index on disk, kept current from the runs stream (scheduler/index_feed.py) on a real
broker: it reads what was stored, keeps it across a restart and then reads only what came
after, and starts over when its file is a copy of another store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.bus.resources import kv_stream
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.scheduler.index_feed import IndexFeed, index_path, open_index
from sortie.scheduler.run_index import RunIndex
from tests.builders import record, spec


async def put(bus: Bus, rec: m.RunRecord) -> int:
    return await bus.runs.put(rec.run_id, codec.encode(rec))


async def listed(feed: IndexFeed, query: q.RunQuery | None = None) -> list[str]:
    await asyncio.wait_for(feed.caught_up.wait(), 30)
    page = feed.index.query(query or q.RunQuery(limit=q.MAX_LIMIT))
    assert isinstance(page, q.RunPage)
    return page.run_ids


async def until_listed(feed: IndexFeed, run_id: str) -> None:
    for _ in range(200):
        if run_id in await listed(feed):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never reached the index")


async def last_seq(bus: Bus) -> int:
    return (await bus.js.stream_info(kv_stream(subjects.KV_RUNS))).state.last_seq


async def test_it_reads_the_store_keeps_it_and_reads_only_what_came_after(
    bus: Bus, tmp_path: Path
) -> None:
    path = index_path(tmp_path)
    assert path is not None
    for i in range(3):
        await put(bus, record(f"r{i}", RunState.COMPLETED, created_at=float(i)))
    await bus.runs.put(subjects.FENCE_KEY, b"fence")  # Sortie's own key: not a run
    feed = IndexFeed(bus.js, RunIndex(path))
    feed.start()
    try:
        assert await listed(feed) == ["r2", "r1", "r0"]
        # written while it follows: a new run, a changed one, a deleted one
        await put(bus, record("r3", RunState.QUEUED, created_at=3.0))
        await put(bus, record("r1", RunState.FAILED, created_at=1.0, tags={"k": "v"}))
        await bus.runs.delete("r0")
        await until_listed(feed, "r3")
        for _ in range(100):
            if await listed(feed) == ["r3", "r2", "r1"]:
                break
            await asyncio.sleep(0.05)
        assert await listed(feed) == ["r3", "r2", "r1"]
        assert await listed(feed, q.RunQuery(tags=[("k", "v")])) == ["r1"]
    finally:
        await feed.close()
    # the scheduler stops; one more run is stored meanwhile
    held = await last_seq(bus)
    await put(bus, record("r4", RunState.QUEUED, created_at=4.0))

    again = RunIndex(path)
    assert again.applied == held  # the file says how far it read
    assert len(again) == 3  # and holds what it read, before reading anything
    feed = IndexFeed(bus.js, again)
    feed.start()
    try:
        assert await listed(feed) == ["r4", "r3", "r2", "r1"]
        assert again.applied == await last_seq(bus)
    finally:
        await feed.close()


async def test_a_file_from_another_store_is_read_again(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    path = index_path(tmp_path / "scheduler")
    assert path is not None
    bus = await open_bus(broker.url, "first", create=True)
    await put(bus, record("old", RunState.COMPLETED))
    feed = IndexFeed(bus.js, RunIndex(path))
    feed.start()
    try:
        assert await listed(feed) == ["old"]
    finally:
        await feed.close()
        await bus.close()
    # the broker's store is replaced by a new one; the scheduler's data directory stays
    other = start_broker(tmp_path / "other-store", port=free_port(), sync_always=False)
    try:
        bus = await open_bus(other.url, "second", create=True)
        await put(bus, record("new", RunState.QUEUED))
        feed = IndexFeed(bus.js, RunIndex(path))
        feed.start()
        try:
            assert await listed(feed) == ["new"]  # not "old", which this store never held
        finally:
            await feed.close()
            await bus.close()
    finally:
        other.stop()


def test_an_older_record_does_not_replace_a_newer_one() -> None:
    index = RunIndex()
    index.update(record("r", RunState.COMPLETED, spec=spec(experiment="e")), revision=9)
    index.update(record("r", RunState.RUNNING, spec=spec(experiment="e")), revision=5)
    assert index.query(q.RunQuery(states=[RunState.COMPLETED])) == q.RunPage(run_ids=["r"], total=1)
    index.remove("r", revision=7)  # a delete older than the record changes nothing
    assert len(index) == 1
    index.remove("r", revision=10)
    assert len(index) == 0


async def test_a_damaged_file_is_replaced_and_read_again(bus: Bus, tmp_path: Path) -> None:
    await put(bus, record("r", RunState.COMPLETED))
    path = index_path(tmp_path)
    assert path is not None
    path.write_bytes(b"not a database, a disk's garbage " * 100)
    feed = IndexFeed(bus.js, open_index(tmp_path))
    feed.start()
    try:
        assert await listed(feed) == ["r"]
    finally:
        await feed.close()


async def test_a_leader_reads_up_to_its_fence_then_indexes_what_it_hands_in(
    bus: Bus, tmp_path: Path
) -> None:
    """Before the fence: the previous leader's records, read from the stream. After it: only
    what this leader hands in as it stores (a record after the fence not handed in is one
    it did not store, which a fenced store never holds: it is not read back)."""
    await put(bus, record("before", RunState.COMPLETED, created_at=1.0))
    fence = await bus.runs.put(subjects.FENCE_KEY, b"fence")
    early = record("early", RunState.QUEUED, created_at=2.0)
    early_seq = await put(bus, early)  # stored by the leader before its feed runs
    feed = IndexFeed(bus.js, RunIndex(index_path(tmp_path)))
    feed.lead_from(fence)
    feed.own([(early, early_seq)])
    feed.start()
    try:
        assert await feed.applied_to(early_seq, 30)
        assert await listed(feed) == ["early", "before"]
        mine = record("mine", RunState.QUEUED, created_at=3.0)
        seq = await put(bus, mine)
        not_mine = await put(bus, record("unfenced", RunState.QUEUED, created_at=4.0))
        feed.own([(mine, seq)])
        assert await feed.applied_to(seq, 30)
        assert await listed(feed) == ["mine", "early", "before"]
        assert feed.index.applied == seq < not_mine
        # a record handed in out of order does not replace the newer one
        feed.own([(record("mine", RunState.RUNNING, created_at=3.0), seq - 1)])
        await until_listed(feed, "mine")
        await asyncio.sleep(0.2)
        running = feed.index.query(q.RunQuery(states=[RunState.RUNNING]))
        assert running == q.RunPage(run_ids=[], total=0)
    finally:
        await feed.close()


async def test_a_follower_ignores_records_handed_in_and_reads_them_back(
    bus: Bus, tmp_path: Path
) -> None:
    feed = IndexFeed(bus.js, RunIndex(index_path(tmp_path)))
    feed.start()
    try:
        rec = record("r", RunState.QUEUED)
        feed.own([(record("ghost", RunState.QUEUED), 1)])  # not leading: ignored
        await put(bus, rec)
        await until_listed(feed, "r")
        assert await listed(feed) == ["r"]
    finally:
        await feed.close()
