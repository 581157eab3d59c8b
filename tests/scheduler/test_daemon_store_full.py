"""A scheduler whose broker store is full (JetStream max_file_store reached) retries its
writes, and still stops when asked: the cycle stuck retrying is abandoned after a bounded
grace (issue I, item 7: `sortie up` ignored SIGTERM while its store was full); a new run it
cannot store is refused to its submitter, saying the store is full."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import pytest
import structlog
from nats.js.api import StorageType, StreamConfig

from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import open_bus
from sortie.bus.store_limits import MIB, is_store_full
from sortie.client.client import Client, StoreFullError
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler


@pytest.fixture
def tiny_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(
        tmp_path / "nats", port=free_port(), sync_always=False, store_limit=16 * MIB
    )
    try:
        yield proc
    finally:
        proc.stop()


async def fill(url: str) -> None:
    """Fill the store to its max_file_store with a stream of no limit of its own."""
    bus = await open_bus(url, "filler", create=True)
    try:
        await bus.js.add_stream(
            StreamConfig(name="FILLER", subjects=["filler"], storage=StorageType.FILE)
        )
        for _ in range(200):  # 25 MB at most: more than the store takes
            try:
                await bus.js.publish("filler", b"f" * (128 * 1024))
            except nats.js.errors.APIError as exc:
                assert is_store_full(exc), exc
                return
        raise AssertionError("the store never refused a write")
    finally:
        await bus.close()


async def test_a_scheduler_stuck_writing_to_a_full_store_stops_when_asked(
    tiny_broker: BrokerProcess, tmp_path: Path
) -> None:
    await fill(tiny_broker.url)
    stop, ready = asyncio.Event(), asyncio.Event()
    config = SchedulerConfig(url=tiny_broker.url, data_dir=tmp_path / "scheduler")
    task = asyncio.create_task(run_scheduler(config, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    bus = await open_bus(tiny_broker.url, "agent")
    with structlog.testing.capture_logs() as logs:
        beat = m.Heartbeat(
            agent_id="a1",
            incarnation="i1",
            target="local",
            hostname="h",
            capacity=m.Capacity(cpus=2, memory_mb=1024),
            sent_at=time.time(),
        )
        await bus.nc.publish(subjects.heartbeat("a1"), codec.encode(beat))
        await bus.close()

        async def retrying() -> None:
            while not any(e["event"] == "store write failed; retrying" for e in logs):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(retrying(), 30)  # the agent's record cannot be written
        stop.set()
        await asyncio.wait_for(task, 60)  # returned by itself: not cancelled, no error
    events = [e["event"] for e in logs]
    assert "stopping with a cycle's writes not done; the next start redoes them" in events


async def test_a_run_the_full_store_cannot_record_is_refused_to_its_submitter(
    tiny_broker: BrokerProcess, tmp_path: Path
) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    config = SchedulerConfig(url=tiny_broker.url, data_dir=tmp_path / "scheduler")
    task = asyncio.create_task(run_scheduler(config, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print(1)\n")
    run = ScriptRunConfig(source_directory=src, script="t.py")
    async with await Client.connect(tiny_broker.url) as client:
        first = await client.submit(run)  # its snapshot is stored now
        await fill(tiny_broker.url)
        with pytest.raises(StoreFullError) as raised:
            await client.submit(run)  # nothing to upload: the scheduler cannot store the run
        assert str(raised.value).startswith(
            "the Sortie store is full: "
        ) and "(JetStream max_file_store)" in str(raised.value)
        assert [r.run_id for r in await client.list_runs()] == [first.run_id]
    stop.set()
    await asyncio.wait_for(task, 60)
