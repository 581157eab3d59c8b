"""What a dashboard shares among its pages: the broker client and one watch of the runs bucket.

Every page that shows runs live (the runs list, a run, the queue) subscribes to the ``Hub``
instead of watching the broker itself: one watch per dashboard, however many pages are open.
A page that cannot keep up (its queue is full) is dropped; its event stream ends and the
browser reconnects, reloading what it shows, so a slow page never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import nats.errors
import structlog
from nats.js.api import DeliverPolicy
from starlette.requests import Request

from sortie.bus.pause import retry_pause
from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import messages as m

log = structlog.get_logger("sortie.web")

QUEUE_SIZE = 4096  # changes a page may be behind before it is dropped
REWATCH_S = 1.0  # after the watch failed (the broker went away), watch again after this
IDLE_HEARTBEAT_S = 2.0  # a lost consumer (the broker restarted) is noticed after a few


class Hub:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._pages: set[asyncio.Queue[m.RunRecord | None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in list(self._pages):
            self._drop(queue)

    async def runs(self) -> AsyncIterator[m.RunRecord]:
        """Every run record written from now on, as written (ends when this page is dropped)."""
        queue: asyncio.Queue[m.RunRecord | None] = asyncio.Queue(QUEUE_SIZE)
        self._pages.add(queue)
        try:
            while (rec := await queue.get()) is not None:
                yield rec
        finally:
            self._pages.discard(queue)

    def subscribe(self) -> Subscription:
        """Like ``runs``, but subscribed at once, before its first ``anext``: a page that
        subscribes and then reads a record misses no change written between the two."""
        queue: asyncio.Queue[m.RunRecord | None] = asyncio.Queue(QUEUE_SIZE)
        self._pages.add(queue)
        return Subscription(queue, self._pages.discard)

    def _publish(self, rec: m.RunRecord) -> None:
        for queue in list(self._pages):
            try:
                queue.put_nowait(rec)
            except asyncio.QueueFull:
                self._drop(queue)

    def _drop(self, queue: asyncio.Queue[m.RunRecord | None]) -> None:
        self._pages.discard(queue)
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)
        if queue.full():  # make room for the end marker: the page reloads anyway
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(None)

    async def _watch(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away: watch again
                log.info("runs watch ended, watching again", error=str(exc))
            # whatever pages missed meanwhile they reload when their stream ends
            for queue in list(self._pages):
                self._drop(queue)
            await retry_pause(REWATCH_S)

    async def _follow(self) -> None:
        """New writes only (an ordered consumer from now on: never the bucket's current
        values, which would be every run). nats-py makes the consumer again after a gap or a
        reconnect, from the last write it delivered, so none is missed."""
        sub = await self.client.bus.js.subscribe(
            subjects.kv_keys(subjects.KV_RUNS),
            stream=subjects.kv_stream(subjects.KV_RUNS),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            idle_heartbeat=IDLE_HEARTBEAT_S,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=60)
                except nats.errors.TimeoutError:
                    continue
                if not msg.data or subjects.reserved_key(
                    subjects.kv_key(subjects.KV_RUNS, msg.subject)
                ):
                    continue  # a delete or purge marker (records are never deleted), the fence
                try:
                    rec = codec.decode(m.RunRecord, msg.data)
                except codec.BadMessage:
                    continue  # only the scheduler writes records; a later one will do
                self._publish(rec)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class Subscription:
    """Every run record written since ``Hub.subscribe`` (ends when the page is dropped);
    ``aclose`` unsubscribes."""

    def __init__(
        self,
        queue: asyncio.Queue[m.RunRecord | None],
        leave: Callable[[asyncio.Queue[m.RunRecord | None]], None],
    ) -> None:
        self._queue = queue
        self._leave = leave

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> m.RunRecord:
        rec = await self._queue.get()
        if rec is None:
            raise StopAsyncIteration
        return rec

    async def aclose(self) -> None:
        self._leave(self._queue)


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub
