"""The sweeps' reader of the metrics stream (``scheduler/sweep_feed.py``) on a real broker:

- at start it reads again what the active sweeps' trials published before it, then says it is
  ready (once), then hands on live batches; with no active sweep it starts at the stream's end;
- following again (a resubscribe, a broker restart) resumes after the last sequence it handed
  on: nothing twice, nothing lost;
- what counts as a primary value: the trial's own numeric points of the metric, not a table
  cell, a child's point, a boolean or a string, and only of a watched sweep's trial whose
  batch names the run its subject does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sortie.bus.broker import BrokerProcess, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.events import Event, MetricsSeen, SweepFeedReady
from sortie.scheduler.sweep_feed import SweepFeed, primary_values
from tests.faults import until

SWEEP = "exp_1_5eed0001"
OTHER = "exp_1_5eed0002"  # a sweep the feed does not watch


def batch(run_id: str, *values: m.MetricValue, attempt: int = 1, name: str = "acc") -> bytes:
    points = [m.MetricPoint(name=name, value=v, t=time.time()) for v in values]
    return codec.encode(m.MetricBatch(run_id=run_id, attempt=attempt, points=points))


async def publish(bus: Bus, run_id: str, data: bytes, writer: str = "a1") -> None:
    await bus.js.publish(subjects.metrics(run_id, writer), data, stream=subjects.STREAM_METRICS)


@dataclass
class Fed:
    """A feed on its own connection (as the scheduler's), and what it handed on."""

    feed: SweepFeed
    events: list[Event] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def seen(self) -> list[tuple[str, int, str | None, tuple[float, ...]]]:
        return [
            (e.run_id, e.attempt, e.writer, e.values)
            for e in self.events
            if isinstance(e, MetricsSeen)
        ]

    def readies(self) -> list[int]:
        """Where in the events each ready signal came."""
        return [i for i, e in enumerate(self.events) if isinstance(e, SweepFeedReady)]

    def start(self, since: float | None) -> None:
        self.task = asyncio.create_task(self.feed.run(since))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@contextlib.asynccontextmanager
async def feeding(
    url: str, watched: Callable[[], Mapping[str, str]], **bus_args: bool
) -> AsyncIterator[Fed]:
    link = await open_bus(url, "sweep-feed-test", **bus_args)
    fed = Fed(SweepFeed(link.js, lambda ev: fed.events.append(ev), watched))
    try:
        yield fed
    finally:
        await fed.stop()
        await link.close()


async def ready(fed: Fed) -> None:
    async def is_ready() -> bool:
        return bool(fed.readies())

    await until(is_ready, 30)


async def seen_count(fed: Fed, n: int) -> None:
    async def enough() -> bool:
        return len(fed.seen()) >= n

    await until(enough, 30)


async def test_it_reads_the_trials_history_again_then_is_ready_then_follows_live(
    bus: Bus, broker: BrokerProcess
) -> None:
    since = time.time()
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 0.1, 0.2))
    await publish(bus, f"{OTHER}_0", batch(f"{OTHER}_0", 0.9))  # not watched
    await publish(bus, f"{SWEEP}_1", batch(f"{SWEEP}_1", 0.3, attempt=2), writer="a2")
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 7.0, name="loss"))  # no primary value
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 0.4))
    history = [
        (f"{SWEEP}_0", 1, "a1", (0.1, 0.2)),
        (f"{SWEEP}_1", 2, "a2", (0.3,)),
        (f"{SWEEP}_0", 1, "a1", (0.4,)),
    ]
    async with feeding(broker.url, lambda: {SWEEP: "acc"}) as fed:
        fed.start(since)
        await ready(fed)
        assert fed.seen() == history
        assert fed.readies() == [len(history)]  # once, after the whole history
        await publish(bus, f"{SWEEP}_2", batch(f"{SWEEP}_2", 0.5))
        await seen_count(fed, len(history) + 1)
        assert fed.seen() == [*history, (f"{SWEEP}_2", 1, "a1", (0.5,))]
        assert fed.readies() == [len(history)]


async def test_with_no_active_sweep_it_is_ready_at_once_and_hands_on_only_what_comes_next(
    bus: Bus, broker: BrokerProcess
) -> None:
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 0.1))
    watched: dict[str, str] = {}
    async with feeding(broker.url, lambda: watched) as fed:
        fed.start(None)
        await ready(fed)
        assert fed.events == [SweepFeedReady()]
        watched[SWEEP] = "acc"  # a sweep is accepted: its trials' metrics are handed on
        await publish(bus, f"{SWEEP}_1", batch(f"{SWEEP}_1", 0.2))
        await seen_count(fed, 1)
        assert fed.seen() == [(f"{SWEEP}_1", 1, "a1", (0.2,))]


async def test_following_again_resumes_after_the_last_sequence_it_handed_on(
    bus: Bus, broker: BrokerProcess
) -> None:
    since = time.time()
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 1.0))
    async with feeding(broker.url, lambda: {SWEEP: "acc"}) as fed:
        fed.start(since)
        await ready(fed)
        await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 2.0))
        await seen_count(fed, 2)
        await fed.stop()  # its subscription ends (as when the broker went away) ...
        for v in (3.0, 4.0):
            await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", v))
        fed.start(since)  # ... and it follows again, from where it was, not from `since`
        await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_0", 5.0))
        await seen_count(fed, 5)
        await asyncio.sleep(0.5)  # room for anything handed on twice to show
        assert [e[3] for e in fed.seen()] == [(1.0,), (2.0,), (3.0,), (4.0,), (5.0,)]
        assert len(fed.readies()) == 1


async def test_across_a_broker_restart_nothing_is_handed_on_twice_or_lost(
    tmp_path: Path, broker: BrokerProcess
) -> None:
    port = int(broker.url.rsplit(":", 1)[1])
    writer = await open_bus(broker.url, "writer", create=True)
    since = time.time()
    await publish(writer, f"{SWEEP}_0", batch(f"{SWEEP}_0", 1.0))
    await writer.close()
    async with feeding(broker.url, lambda: {SWEEP: "acc"}, reconnect_forever=True) as fed:
        fed.start(since)
        await ready(fed)
        broker.stop()
        back = start_broker(broker.data_dir, port=port, sync_always=False)
        try:
            writer = await open_bus(back.url, "writer-after-restart")
            try:
                for v in (2.0, 3.0):
                    await publish(writer, f"{SWEEP}_0", batch(f"{SWEEP}_0", v))

                async def all_seen() -> bool:
                    return len(fed.seen()) >= 3

                await until(all_seen, 60)
                await publish(writer, f"{SWEEP}_0", batch(f"{SWEEP}_0", 4.0))
                await seen_count(fed, 4)
                await asyncio.sleep(0.5)
                assert [e[3] for e in fed.seen()] == [(1.0,), (2.0,), (3.0,), (4.0,)]
            finally:
                await writer.close()
        finally:
            await fed.stop()
            back.stop()


async def test_a_batch_is_handed_on_only_for_a_watched_trial_that_it_names(
    bus: Bus, broker: BrokerProcess
) -> None:
    since = time.time()
    # a batch naming another run than its subject's, an undecodable one, one of the 0.1 form
    await publish(bus, f"{SWEEP}_0", batch(f"{SWEEP}_1", 0.1))
    await publish(bus, f"{SWEEP}_0", b"not a batch")
    await bus.js.publish(
        f"{subjects.PREFIX}.metrics.{SWEEP}_2",
        batch(f"{SWEEP}_2", 0.2),
        stream=subjects.STREAM_METRICS,
    )
    await publish(bus, f"{SWEEP}_3", batch(f"{SWEEP}_3", 0.3))
    async with feeding(broker.url, lambda: {SWEEP: "acc"}) as fed:
        fed.start(since)
        await ready(fed)
        assert fed.seen() == [(f"{SWEEP}_2", 1, None, (0.2,)), (f"{SWEEP}_3", 1, "a1", (0.3,))]


@pytest.mark.parametrize(
    ("point", "counts"),
    [
        (m.MetricPoint(name="acc", value=0.5, t=1.0), True),
        (m.MetricPoint(name="acc", value=3, t=1.0, step=7), True),  # an int, a step
        (m.MetricPoint(name="acc", value=0.5, t=1.0, column="val"), False),  # a table's cell
        (m.MetricPoint(name="acc", value=0.5, t=1.0, run="exp_1_5eed0001_0_kid"), False),
        (m.MetricPoint(name="acc", value=True, t=1.0), False),  # a bool is no number here
        (m.MetricPoint(name="acc", value="0.5", t=1.0), False),
        (m.MetricPoint(name="loss", value=0.5, t=1.0), False),
    ],
)
def test_which_points_are_primary_values(point: m.MetricPoint, counts: bool) -> None:
    mine = m.MetricPoint(name="acc", value=0.25, t=0.5)
    got = primary_values(m.MetricBatch(run_id="r", attempt=1, points=[mine, point, mine]), "acc")
    value = float(point.value) if counts and not isinstance(point.value, str) else None
    assert got == ((0.25, value, 0.25) if value is not None else (0.25, 0.25))
