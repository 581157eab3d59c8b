"""The leader's fence (scheduler.fence) on a real broker: a leader's writes are stored while
its fence stands; once another leader raised its own, every kind of write the old one makes
fails with a deposition naming the new leader, and stores nothing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats.js.errors
import pytest

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.scheduler.fence import FENCED_BUCKETS, Fence, FencedBucket
from sortie.scheduler.lease import Deposed
from tests.harness import FakeAgent


def leader(epoch: int, host: str = "here") -> Leadership:
    return Leadership(
        holder=f"h{epoch}",
        epoch=epoch,
        host=host,
        pid=100 + epoch,
        acquired_at=0.0,
        renewed_at=0.0,
        lease_s=10.0,
    )


async def fenced(bus: Bus, who: Leadership, bucket: str = subjects.KV_VMS) -> FencedBucket:
    fence = Fence(bus.nc, bus.js, who)
    await fence.raise_(FENCED_BUCKETS)
    return fence.bucket(bucket, await bus.js.key_value(bucket))


async def values(bus: Bus, bucket: str = subjects.KV_VMS) -> dict[str, bytes]:
    kv = await bus.js.key_value(bucket)
    return {e.key: e.value or b"" for e in await kv_items(kv)}


async def test_the_leaders_writes_are_stored_and_readers_never_see_the_fence(bus: Bus) -> None:
    mine = await fenced(bus, leader(1))
    await mine.put("a", b"1")
    rev = await mine.create("b", b"2")
    await mine.update("b", b"3", last=rev)
    await mine.write_batch([("c", b"4", 0), ("d", b"5", 0)])
    await mine.delete("d")
    assert await values(bus) == {"a": b"1", "b": b"3", "c": b"4"}
    # the fence and its probe are in the bucket, but no whole-bucket read lists them
    kv = await bus.js.key_value(subjects.KV_VMS)
    assert (await kv.get(subjects.FENCE_KEY)).value
    assert not any(subjects.reserved_key(k) for k in await values(bus))


async def test_a_record_changed_meanwhile_is_a_conflict_not_a_deposition(bus: Bus) -> None:
    mine = await fenced(bus, leader(1))
    rev = await mine.create("b", b"1")
    await mine.update("b", b"2", last=rev)
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await mine.update("b", b"3", last=rev)
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await mine.create("b", b"4")
    assert await values(bus) == {"b": b"2"}


async def test_after_another_leader_raised_its_fence_the_old_one_stores_nothing(
    bus: Bus,
) -> None:
    old = await fenced(bus, leader(1))
    rev = await old.create("b", b"1")
    await old.put("a", b"1")
    new = await fenced(bus, leader(2, host="there"))
    attempts = [
        old.put("a", b"old"),
        old.delete("a"),
        old.create("z", b"old"),
        old.update("b", b"old", last=rev),
        old.write_batch([("b", b"old", rev), ("y", b"old", 0)]),
    ]
    for attempt in attempts:
        with pytest.raises(Deposed) as why:
            await attempt
        assert why.value.leader.epoch == 2
        assert "there" in str(why.value) and "epoch 2" in str(why.value)
    assert await values(bus) == {"a": b"1", "b": b"1"}
    # the new leader writes as usual
    await new.put("a", b"new")
    assert (await values(bus))["a"] == b"new"


async def test_each_bucket_the_leader_writes_is_fenced(bus: Bus) -> None:
    olds = [await fenced(bus, leader(1), b) for b in FENCED_BUCKETS]
    await fenced(bus, leader(2))
    for old in olds:
        with pytest.raises(Deposed):
            await old.put("k", b"old")
        assert "k" not in await values(bus, old.name)


async def test_a_scheduler_that_leads_by_no_lease_writes_unfenced(bus: Bus) -> None:
    plain = Fence(bus.nc, bus.js, None).bucket(
        subjects.KV_VMS, await bus.js.key_value(subjects.KV_VMS)
    )
    rev = await plain.create("a", b"1")
    await plain.update("a", b"2", last=rev)
    await plain.put("b", b"3")
    await plain.delete("b")
    kv = await bus.js.key_value(subjects.KV_VMS)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(subjects.FENCE_KEY)
    assert await values(bus) == {"a": b"2"}


async def test_a_leader_whose_fence_another_raised_places_nothing_and_stops(
    bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The real daemon, leading by its lease: once another leader's fence stands (before its
    own renewal could notice), the run it is asked for is neither stored nor assigned, and
    the daemon stops with the deposition."""
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = SchedulerConfig(url=broker.url, data_dir=tmp_path / "sched", tick_s=0.2)
    told = await bus.nc.subscribe(subjects.HEARTBEAT_NOW)
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        # as it starts leading it tells every agent its epoch (older ones' commands refused)
        now = codec.decode(m.HeartbeatNow, (await told.next_msg(timeout=10)).data)
        assert now.epoch == 1
        agent = FakeAgent(bus, "sim-1")
        await agent.start()
        src = tmp_path / "src"
        src.mkdir()
        (src / "t.py").write_text("print(1)\n")
        async with await Client.connect(broker.url) as c:
            first = await c.submit(ScriptRunConfig(source_directory=src, script="t.py"))
            placed = await asyncio.wait_for(agent.next_command(), 10)
            assert isinstance(placed, m.Assign) and placed.run_id == first.run_id
            assert placed.epoch == 1

            await Fence(bus.nc, bus.js, leader(2, host="there")).raise_(FENCED_BUCKETS)
            kv = await bus.js.key_value(subjects.KV_RUNS)
            before = {e.key: e.revision for e in await kv_items(kv)}
            submit = asyncio.create_task(
                c.submit(ScriptRunConfig(source_directory=src, script="t.py"))
            )
            with pytest.raises(Deposed) as why:
                await asyncio.wait_for(task, 20)
            assert why.value.leader.epoch == 2
            submit.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await submit
        # nothing written after the fence went up, and nothing more assigned
        assert {e.key: e.revision for e in await kv_items(kv)} == before
        assert agent.commands.empty()
        await agent.stop()
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
