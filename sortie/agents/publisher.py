"""Getting run output and reports onto JetStream without losing any.

* :func:`publish_acked` retries one JetStream publish with backoff until the broker acks it
  (the broker may be restarting). A ``Nats-Msg-Id`` header makes a retry after a lost ack a
  no-op inside the stream's duplicate window. A store that refuses the write because it is
  full is retried a bounded number of times and for a bounded time, then
  :class:`~sortie.bus.store_limits.StoreFull` is raised: only freeing space helps.
* :class:`Batcher` collects items and sends them in order, every ``interval`` seconds or
  ``max_items`` items, whichever comes first; ``close`` sends the rest and waits for acks.
* :func:`split_output` is the pure part of turning process output into log lines.
* :class:`RunOutput` is one attempt's logs and metrics, within its
  :class:`~agents.limits.RunLimits`: past a limit the tail is kept and published at the end,
  and while the broker is away at most ``queue_bytes`` of log text waits in memory
  (:meth:`RunOutput.room`: the executors stop reading the script's pipe until there is room).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Literal, TypeVar

import nats.errors
import structlog
from nats.js import JetStreamContext

from sortie.agents.limits import LogBudget, MetricBudget, RunLimits
from sortie.bus.pause import retry_pause
from sortie.bus.store_limits import FullBound, StoreFull, describe_full, is_store_full
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.run_index import LATEST_METRICS

T = TypeVar("T")
Stream = Literal["stdout", "stderr", "system"]
MAX_LINE_CHARS = 16 * 1024

log = structlog.get_logger()


async def publish_acked(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    msg_id: str | None = None,
    ack_timeout: float = 2.0,
    first_delay: float = 0.05,
    max_delay: float = 2.0,
) -> None:
    """Publish until acked; only cancellation stops it, or a full store: past its
    :class:`FullBound` it raises :class:`StoreFull`."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    delay = first_delay
    tries = 0
    full = FullBound()
    while True:
        try:
            await js.publish(subject, data, timeout=ack_timeout, headers=headers)
            if tries:
                log.info("publish succeeded after retries", subject=subject, tries=tries + 1)
            return
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            tries += 1
            if is_store_full(exc) and full.refused(time.monotonic()):
                message = await describe_full(js, refusal=exc)
                log.warning(
                    "the store is full; giving up", subject=subject, tries=tries, why=message
                )
                raise StoreFull(message) from None
            if tries == 1 or tries % 20 == 0:
                log.warning(
                    "publish failed; retrying", subject=subject, tries=tries, error=repr(exc)
                )
            await retry_pause(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_delay)


class Batcher(Generic[T]):
    """Send items in batches, in order, from one task (so batches never overtake each other)."""

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[None]],
        *,
        max_items: int = 200,
        interval: float = 0.1,
        weigh: Callable[[T], int] = lambda _item: 1,
        max_waiting: int | None = None,
    ) -> None:
        self._send = send
        self._max = max_items
        self._interval = interval
        self._weigh = weigh
        self._max_waiting = max_waiting  # see room()
        self._waiting = 0  # the weight of the items not yet taken for sending
        self._taken = asyncio.Event()
        self._items: list[T] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._loop())

    @property
    def task(self) -> asyncio.Task[None]:
        """The sending task: it ends when closed, or with the error that stopped sending."""
        return self._task

    def add(self, item: T) -> None:
        if self._task.done():
            if self._closing:
                raise RuntimeError("batcher is closed")
            return  # sending failed (a full store): close() raises why; nothing piles up
        self._items.append(item)
        self._waiting += self._weigh(item)
        self._has_items.set()
        if len(self._items) >= self._max:
            self._full.set()

    async def _loop(self) -> None:
        while True:
            await self._has_items.wait()
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._interval)
            while self._items:
                batch, self._items = self._items[: self._max], self._items[self._max :]
                self._waiting -= sum(self._weigh(i) for i in batch)
                self._taken.set()
                await self._send(batch)
            self._full.clear()
            self._has_items.clear()
            if self._closing:
                return

    async def room(self) -> None:
        """Return once the items waiting weigh less than ``max_waiting`` (at once without a
        bound). While a send is retrying (the broker is away) nothing is taken, so a producer
        that awaits this before adding more holds at most that much, plus the batch in flight.
        """
        while (
            self._max_waiting is not None
            and self._waiting >= self._max_waiting
            and not self._task.done()
        ):
            self._taken.clear()
            await self._taken.wait()

    async def close(self) -> None:
        """Send everything added so far and wait until it is acked."""
        self._closing = True
        self._has_items.set()
        self._full.set()
        await asyncio.shield(self._task)

    def abort(self) -> None:
        self._task.cancel()


class LineSplitter:
    """Bytes in, complete lines out: utf-8 with replacement, long lines split, no newline."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._max = max_chars

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + self._decoder.decode(data)
        *lines, self._partial = text.split("\n")
        out: list[str] = []
        for line in lines:
            out.extend(_chunks(line.removesuffix("\r"), self._max))
        while len(self._partial) > self._max:
            out.append(self._partial[: self._max])
            self._partial = self._partial[self._max :]
        return out

    def finish(self) -> list[str]:
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return _chunks(rest.removesuffix("\r"), self._max) if rest else []


def split_output(data: bytes, max_chars: int = MAX_LINE_CHARS) -> list[str]:
    """All lines of a complete output (pure helper for tests and one-shot use)."""
    s = LineSplitter(max_chars)
    return s.feed(data) + s.finish()


def _chunks(line: str, size: int) -> list[str]:
    if len(line) <= size:
        return [line]
    return [line[i : i + size] for i in range(0, len(line), size)]


class LatestMetrics:
    """The last value of each plain numeric metric of the run itself (not a table's cell, not
    a child's point), for its record: the first ``LATEST_METRICS`` names only."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, point: m.MetricPoint) -> None:
        value = point.value
        if point.column is not None or point.run is not None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if point.name in self.values or len(self.values) < LATEST_METRICS:
            self.values[point.name] = float(value)


class RunOutput:
    """One attempt's log and metric streams, batched onto JetStream, within ``limits``."""

    def __init__(
        self,
        js: JetStreamContext,
        run_id: str,
        attempt: int,
        writer_id: str,
        *,
        agent_id: str,
        rank: int = 0,
        limits: RunLimits | None = None,
    ) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.rank = rank
        self._js = js
        self._writer = writer_id  # agent incarnation: makes msg ids unique per writer
        # published under this agent's id, the only one its credentials allow
        self._log_subject = subjects.logs(run_id, agent_id)
        self._metric_subject = subjects.metrics(run_id, agent_id)
        self._log_seq = 0
        self._metric_seq = 0
        self.limits = limits or RunLimits()
        self._log_budget = LogBudget(self.limits)
        self._metric_budget = MetricBudget(self.limits)
        self.logs: Batcher[m.LogLine] = Batcher(
            self._send_logs,
            weigh=lambda line: len(line.text) + 64,
            max_waiting=self.limits.queue_bytes,
        )
        self.metrics: Batcher[m.MetricPoint] = Batcher(self._send_metrics)
        self.latest = LatestMetrics()  # what the run's reports carry (RunRecord.metrics)
        # set when the store refuses the run's output as full (close() then raises StoreFull)
        self.full = asyncio.Event()
        for batcher in (self.logs, self.metrics):
            batcher.task.add_done_callback(self._sending_ended)

    def _sending_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and isinstance(task.exception(), StoreFull):
            self.full.set()

    def line(self, stream: Stream, text: str) -> None:
        now = time.time()
        for chunk in _chunks(text, MAX_LINE_CHARS):
            line = m.LogLine(t=now, stream=stream, text=chunk)
            if stream == "system":  # the agent's own lines are few, and always published
                self.logs.add(line)
                continue
            was_cut = self._log_budget.cut
            if self._log_budget.take(line):
                self.logs.add(line)
            elif not was_cut:
                self.logs.add(m.LogLine(t=now, stream="system", text=self._log_budget.cut_notice()))

    def system(self, text: str) -> None:
        self.line("system", text)

    async def room(self) -> None:
        """Return when more output may be read (see :meth:`Batcher.room`)."""
        await self.logs.room()

    def metric(self, point: m.MetricPoint) -> None:
        self.latest.add(point)
        was_cut = self._metric_budget.cut
        if self._metric_budget.take(point):
            self.metrics.add(point)
        elif not was_cut:
            self.system(self._metric_budget.cut_notice())

    def flush_tails(self) -> None:
        """Publish what the limits kept back: the log's tail and each metric's last point
        (once the script has ended; :meth:`close` does it too)."""
        head, points = self._metric_budget.tail()
        if head is not None:
            for point in points:
                self.metrics.add(point)
            self.system(head)
        head, lines = self._log_budget.tail()
        if head is not None:
            self.system(head)
            for line in lines:
                self.logs.add(line)

    async def _send_logs(self, lines: list[m.LogLine]) -> None:
        self._log_seq += 1
        batch = m.LogBatch(run_id=self.run_id, attempt=self.attempt, lines=lines, rank=self.rank)
        await publish_acked(
            self._js,
            self._log_subject,
            codec.encode(batch),
            msg_id=f"log-{self.run_id}-{self.attempt}-{self._writer}-{self._log_seq}",
        )

    async def _send_metrics(self, points: list[m.MetricPoint]) -> None:
        self._metric_seq += 1
        batch = m.MetricBatch(run_id=self.run_id, attempt=self.attempt, points=points)
        await publish_acked(
            self._js,
            self._metric_subject,
            codec.encode(batch),
            msg_id=f"metric-{self.run_id}-{self.attempt}-{self._writer}-{self._metric_seq}",
        )

    async def close(self) -> None:
        """Publish the kept tails, flush both streams and wait for their acks;
        :class:`StoreFull` if the store refused them."""
        self.flush_tails()
        await asyncio.gather(self.metrics.close(), self.logs.close())

    def abort(self) -> None:
        self.logs.abort()
        self.metrics.abort()


async def send_report(js: JetStreamContext, report: m.RunReport) -> None:
    """Publish one run report until acked (idempotent per agent incarnation/run/attempt/state,
    and per engine job id/state/reason: an engine's job may change within one run state)."""
    msg_id = (
        f"report-{report.agent_id}-{report.incarnation}-{report.run_id}-"
        f"{report.attempt}-{report.state}"
    )
    job = report.engine_job
    if job is not None:
        msg_id += f"-{job.job_id}-{job.state}-{job.reason or ''}"
    await publish_acked(js, subjects.report(report.agent_id), codec.encode(report), msg_id=msg_id)
