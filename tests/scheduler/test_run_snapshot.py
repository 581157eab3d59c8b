"""A start reads the latest snapshot of the runs in flight and the records stored after it,
not every run ever stored (scheduler/run_snapshot.py, run_history.py), on a real broker:
what it holds is what a whole read would hold, a retried submission of a run that ended is
still answered with that run, run lists still list every run, and a deposed leader's
snapshot is refused."""

from __future__ import annotations

import asyncio
import zlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import msgspec
import nats.js.errors
import pytest

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto import sweeps as sw
from sortie.proto.run_snapshot import RunsSnapshotRef
from sortie.proto.states import RunState
from sortie.scheduler import run_snapshot
from sortie.scheduler.daemon import Daemon, SchedulerConfig
from sortie.scheduler.lease import Deposed
from tests.builders import record, spec
from tests.harness import scheduler_running
from tests.scheduler.test_fence import leader
from tests.scheduler.test_sweep_core import sweep_spec


def scheduler(broker: BrokerProcess, data_dir: Path) -> AbstractAsyncContextManager[None]:
    return scheduler_running(
        SchedulerConfig(url=broker.url, data_dir=data_dir, tick_s=0.1, snapshot_every_s=0.2)
    )


async def pointer(bus: Bus) -> RunsSnapshotRef | None:
    try:
        entry = await bus.runs.get(subjects.RUNS_SNAPSHOT_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return codec.decode(RunsSnapshotRef, entry.value or b"")


async def snapshot_past(bus: Bus, seq: int) -> RunsSnapshotRef:
    """The first snapshot that reflects every write up to ``seq``."""
    for _ in range(300):
        ref = await pointer(bus)
        if ref is not None and ref.seq >= seq:
            return ref
        await asyncio.sleep(0.05)
    raise AssertionError(f"no snapshot past {seq}: {await pointer(bus)}")


async def put(bus: Bus, rec: m.RunRecord) -> int:
    return await bus.runs.put(rec.run_id, codec.encode(rec))


async def test_a_start_reads_the_snapshot_and_what_was_stored_after_it(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print(1)\n")
    config = ScriptRunConfig(source_directory=src, script="t.py")
    old = await put(bus, record("before_0", RunState.COMPLETED, spec=spec(submission_id="s-0")))
    async with scheduler(broker, tmp_path / "a"), await Client.connect(broker.url) as client:
        # no snapshot yet: the first start reads every record, then stores one at once
        first = await snapshot_past(bus, old)
        assert first.runs == 0  # nothing in flight
        ended = await client.submit(config, submission_id="s-ended")
        await client.cancel(ended.run_id)  # queued, so it ends at once
        queued = await client.submit(config, submission_id="s-queued")
        for _ in range(100):
            rec = codec.decode(m.RunRecord, (await bus.runs.get(ended.run_id)).value or b"")
            if rec.state is RunState.CANCELED:
                break
            await asyncio.sleep(0.05)
        last = (await bus.runs.get(ended.run_id)).revision or 0
        ref = await snapshot_past(bus, max(last, (await bus.runs.get(queued.run_id)).revision or 0))
        assert ref.runs == 1  # the queued run only
    # stored after the snapshot, as a leader that died before its next snapshot leaves it
    await put(bus, record("late_done", RunState.COMPLETED, spec=spec(submission_id="s-late")))
    await put(bus, record("late_queued", RunState.QUEUED))

    # a start loads the snapshot and the records after it: what a whole read would hold
    fresh = Daemon(bus, SchedulerConfig(url=broker.url, data_dir=tmp_path / "check"))
    await fresh.load()
    assert fresh.snapshot_ref == await pointer(bus)
    assert set(fresh.state.runs) == {queued.run_id, "late_queued"}
    await fresh.feed.close()  # its run index (index_feed.py) is another test's

    async with scheduler(broker, tmp_path / "b"), await Client.connect(broker.url) as client:
        # retried submissions of runs that ended find them (the one stored after the
        # snapshot too), and create nothing
        for sid, run_id in [
            ("s-0", "before_0"),
            ("s-ended", ended.run_id),
            ("s-late", "late_done"),
            ("s-queued", queued.run_id),
        ]:
            again = await client.submit(config, submission_id=sid)
            assert again.run_id == run_id, sid
        # run lists list every run ever stored, once the index is read beside the loop
        _, page = await client.query_runs(q.RunQuery(limit=10))
        assert page.total == 5
        assert set(page.run_ids) == {
            "before_0",
            ended.run_id,
            queued.run_id,
            "late_done",
            "late_queued",
        }
        new = await client.submit(config, submission_id="s-new")
        assert new.run_id not in page.run_ids


async def test_a_deposed_leader_cannot_point_at_its_snapshot(bus: Bus, tmp_path: Path) -> None:
    old = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path / "old"))
    new = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path / "new"))
    await old.lead_as(leader(1))
    await new.lead_as(leader(2))  # raises the fence: the old leader's writes fail from here
    stale = run_snapshot.take([(record("r", RunState.QUEUED), 1)], seq=1, epoch=1)
    with pytest.raises(Deposed):
        await run_snapshot.store(bus.js, old.runs, stale, previous=None)
    assert await pointer(bus) is None
    obs = await bus.js.object_store(subjects.OBJ_STATE)
    with pytest.raises(nats.js.errors.NotFoundError):
        await obs.get(run_snapshot.object_name(stale))  # its object was removed
    # the leader's own is stored, and replaces the one before it
    mine = run_snapshot.take([], seq=2, epoch=2)
    ref = await run_snapshot.store(bus.js, new.runs, mine, previous=None)
    assert await pointer(bus) == ref
    newer = run_snapshot.take([], seq=3, epoch=2)
    await run_snapshot.store(bus.js, new.runs, newer, previous=ref.name)
    with pytest.raises(nats.js.errors.NotFoundError):
        await obs.get(ref.name)
    assert (await run_snapshot.latest(bus.js, bus.runs)) is not None


def test_later_records_replace_the_snapshots_and_deletions_drop_them() -> None:
    a, b = record("a", RunState.QUEUED), record("b", RunState.RUNNING)
    snap = run_snapshot.take([(a, 5), (b, 6)], seq=6, epoch=1)
    done = record("a", RunState.COMPLETED)
    c = record("c", RunState.QUEUED)
    merged, unreadable = run_snapshot.merge(
        snap,
        [("a", 7, codec.encode(done)), ("b", 8, None), ("c", 9, codec.encode(c)), ("x", 10, b"{")],
    )
    assert merged == {"a": (done, 7), "c": (c, 9)}
    assert unreadable == 1


async def test_a_snapshot_keeps_the_ended_trials_of_a_sweep_in_flight(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    """A sweep's controller counts its ended trials: a start from a snapshot still has them,
    though they are over (and the ended trials of an ended sweep are not kept)."""
    sweep = m.Sweep(spec=sweep_spec(max_total_trials=3), issued=1)  # more to come
    await put(bus, record("sw", RunState.RUNNING, sweep=sweep))
    trial = record(
        "sw_t0", RunState.COMPLETED, parent_id="sw", trial=sw.Trial(index=0, params={"lr": 0.1})
    )
    await put(bus, trial)
    await put(bus, record("old", RunState.COMPLETED, sweep=sweep))
    old_trial = msgspec.structs.replace(trial, run_id="old_t0", parent_id="old")
    last = await put(bus, old_trial)
    async with scheduler(broker, tmp_path / "a"):
        await snapshot_past(bus, last)
    fresh = Daemon(bus, SchedulerConfig(url=broker.url, data_dir=tmp_path / "check"))
    await fresh.load()
    assert fresh.snapshot_ref is not None
    assert set(fresh.kept_ended) == {"sw_t0"}
    assert "sw_t0" in fresh.state.sweeps["sw"].trials


def test_snapshots_come_less_often_as_they_grow() -> None:
    def due(writes: int, held: int, since_s: float = 0.0, cost_s: float = 0.0) -> bool:
        return run_snapshot.due(
            writes=writes,
            held=held,
            since_s=since_s,
            cost_s=cost_s,
            every_writes=20_000,
            every_s=30.0,
        )

    assert due(20_000, held=100) and not due(19_999, held=100)
    # a million runs in flight: not every 20,000 placements, but every million writes
    assert not due(20_000, held=1_000_000) and due(1_000_000, held=1_000_000)
    # by time: 30 s that saw a write, or ten times what the last one took
    assert due(1, held=10, since_s=30.0) and not due(0, held=10, since_s=3600.0)
    assert not due(1, held=10, since_s=30.0, cost_s=4.0) and due(
        1, held=10, since_s=40.0, cost_s=4.0
    )


async def test_snapshots_an_earlier_leader_left_behind_are_swept(bus: Bus) -> None:
    obs = await bus.js.object_store(subjects.OBJ_STATE)
    for name in ("runs-1-10", "runs-1-20", "runs-2-30", "runs-3-40"):
        await obs.put(name, b"x")
    named = RunsSnapshotRef(name="runs-1-20", seq=20, epoch=1, taken_at=0.0, runs=0, size=1)
    await bus.runs.put(subjects.RUNS_SNAPSHOT_KEY, codec.encode(named))
    # the leader of epoch 2: epoch 1's object nobody points at goes; the one the pointer
    # names stays, and so do this leader's own and a later one's
    assert await run_snapshot.sweep(bus.js, bus.runs, epoch=2) == ["runs-1-10"]
    left = {i.name for i in await obs.list() if not i.deleted}
    assert left == {"runs-1-20", "runs-2-30", "runs-3-40"}


def test_a_stored_snapshot_reads_back_whole_across_many_slices() -> None:
    # more runs than one slice, records of different shapes, and bytes that span the
    # decompressed slices' ends: what is read is exactly what was taken
    n = run_snapshot.SLICE * 2 + 7
    runs = [
        (
            record(
                f"r{i:05d}",
                RunState.RUNNING if i % 3 else RunState.QUEUED,
                tags={"i": str(i)} if i % 2 else {},
                spec=spec(arguments=["--seed", str(i)] * (i % 5)),
            ),
            i + 1,
        )
        for i in range(n)
    ]
    taken = run_snapshot.take(runs, seq=n, epoch=3)
    data = run_snapshot.pack(taken)
    assert run_snapshot.unpack(data) == taken


def test_a_snapshot_cut_short_or_miscounted_is_refused() -> None:
    taken = run_snapshot.take([(record(f"r{i}"), i + 1) for i in range(50)], seq=50, epoch=1)
    data = run_snapshot.pack(taken)
    with pytest.raises((run_snapshot.Unreadable, codec.BadMessage)):
        run_snapshot.unpack(zlib.compress(zlib.decompress(data)[:-300]))  # a run cut off
    lines = zlib.decompress(data).split(b"\n")
    fewer = b"\n".join([lines[0], *lines[2:]])  # one run line gone: the head says 50
    with pytest.raises(run_snapshot.Unreadable):
        run_snapshot.unpack(zlib.compress(fewer))
