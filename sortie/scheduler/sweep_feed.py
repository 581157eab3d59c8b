"""The sweeps' one reader of the metrics stream (shell): each batch a trial of an active sweep
publishes becomes a ``MetricsSeen`` event holding its points of the sweep's primary metric.

One ordered consumer on every run's metrics subject, for all sweeps: no polling per trial.
At start it reads from the oldest active sweep's creation (its trials' whole history: the
controller decides on it again after a restart), and the core steps no sweep until the stream
has been read up to where it was (``SweepFeedReady``); then it goes on live. It keeps the
last stream sequence it handed on and resumes after it when it subscribes again, and the
ordered consumer does the same across a broker reconnect (it starts by sequence, never by
time: see ``_before``): no gap, no point twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Callable, Mapping

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sortie.bus.pause import retry_pause
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.events import Event, MetricsSeen, SweepFeedReady
from sortie.scheduler.sweep_runs import sweep_of

log = structlog.get_logger("sortie.scheduler.sweeps")

IDLE_S = 0.25  # a wait this long with nothing new: check whether the start's end is reached
RESUBSCRIBE_S = 0.5
REPLAY_MARGIN_S = 60.0  # broker and scheduler clocks may differ a little
LOOKUP_INACTIVE_S = 30.0  # the start's lookup consumer, should its delete not reach the broker


def primary_values(batch: m.MetricBatch, metric: str) -> tuple[float, ...]:
    """The batch's numeric points of ``metric`` (the run's own, not a table cell or a child's),
    in the order logged."""
    return tuple(
        float(p.value)
        for p in batch.points
        if p.name == metric
        and p.column is None
        and p.run is None
        and isinstance(p.value, int | float)
        and not isinstance(p.value, bool)
    )


class SweepFeed:
    """``watched()``: active sweep run id -> its primary metric (kept current by the daemon).
    ``enqueue``: the daemon's event queue."""

    def __init__(
        self,
        js: JetStreamContext,
        enqueue: Callable[[Event], None],
        watched: Callable[[], Mapping[str, str]],
    ) -> None:
        self.js = js
        self.enqueue = enqueue
        self.watched = watched
        self.last_seq = 0  # the last stream sequence handed on (or skipped)
        self.ready = False
        self.since: float | None = None

    async def run(self, since: float | None) -> None:
        """``since``: the oldest active sweep's creation (None: none is active, so nothing
        needs reading again: live from the stream's end)."""
        self.since = since
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away: follow again
                log.info("sweep metrics feed ended; following again", error=repr(exc))
            await retry_pause(RESUBSCRIBE_S)

    async def _start(self) -> int:
        """Where to read from (after ``last_seq``), and the stream's last sequence now (ready
        once reached)."""
        info = await self.js.stream_info(subjects.STREAM_METRICS)
        end = info.state.last_seq
        if self.last_seq == 0 and self.since is None:
            self.last_seq = end  # nothing to read again: from the next one on
        elif self.last_seq == 0 and self.since is not None:
            self.last_seq = await self._before(self.since - REPLAY_MARGIN_S)
        return end

    async def _before(self, since: float) -> int:
        """The stream sequence just before the first metrics message at or after ``since``:
        an ephemeral consumer that starts there says (and is deleted). The feed itself always
        starts by sequence: nats-py makes an ordered consumer again by sequence after a broker
        restart but keeps a start time given, which the server refuses (the feed then got
        nothing more, silently)."""
        start = datetime.datetime.fromtimestamp(since, datetime.UTC)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=AckPolicy.NONE,
            filter_subject=subjects.METRICS_ALL,
            mem_storage=True,
            inactive_threshold=LOOKUP_INACTIVE_S,
        )
        info = await self.js.add_consumer(subjects.STREAM_METRICS, config=config)
        with contextlib.suppress(nats.errors.Error):
            await self.js.delete_consumer(subjects.STREAM_METRICS, info.name)
        # no answer where it starts: read from the stream's first (more, never less)
        return info.delivered.stream_seq if info.delivered is not None else 0

    async def _follow(self) -> None:
        end = await self._start()
        sub = await self.js.subscribe(
            subjects.METRICS_ALL,
            stream=subjects.STREAM_METRICS,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=self.last_seq + 1),
        )
        try:
            if self.last_seq >= end:
                self._caught_up()
            while True:
                try:
                    msg = await sub.next_msg(timeout=IDLE_S)
                except nats.errors.TimeoutError:
                    if not self.ready and await _drained(sub):
                        self._caught_up()
                    continue
                seq = msg.metadata.sequence.stream
                if seq <= self.last_seq:
                    continue  # already handed on (a consumer made again)
                self.last_seq = seq
                self._hand_on(msg)
                if seq >= end:
                    self._caught_up()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _caught_up(self) -> None:
        if not self.ready:
            self.ready = True
            self.enqueue(SweepFeedReady())

    def _hand_on(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) < 3:
            return
        run_id = parts[2]
        metric = self.watched().get(sweep_of(run_id))
        if metric is None:
            return
        try:
            batch = codec.decode(m.MetricBatch, msg.data)
        except codec.BadMessage:
            return  # the dashboard and clients skip it too
        values = primary_values(batch, metric)
        if values and batch.run_id == run_id:
            writer = subjects.writer_of(msg.subject)
            self.enqueue(
                MetricsSeen(run_id=run_id, attempt=batch.attempt, writer=writer, values=values)
            )


async def _drained(sub: JetStreamContext.PushSubscription) -> bool:
    """Nothing left for the consumer on the server, and nothing delivered still unread. (A
    message the server delivered before answering comes first on the same connection, so it
    is in ``pending_msgs`` by the time the answer is read.)"""
    info = await sub.consumer_info()
    return info.num_pending == 0 and not sub.pending_msgs
