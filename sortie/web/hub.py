"""What a dashboard shares among its pages: the broker client and one watch of the runs bucket.

Every page that shows runs live (the runs list, a run, the queue) subscribes to the ``Hub``
instead of watching the broker itself: one watch per dashboard, however many pages are open.
A page that cannot keep up (its queue is full) is dropped; its event stream ends and the
browser reconnects, reloading what it shows, so a slow page never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats.errors
import structlog
from nats.js.api import DeliverPolicy
from starlette.requests import Request

from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import messages as m

log = structlog.get_logger("sortie.web")

QUEUE_SIZE = 4096  # changes a page may be behind before it is dropped
REWATCH_S = 1.0  # after the watch failed (the broker went away), watch again after this


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
            await asyncio.sleep(REWATCH_S)

    async def _follow(self) -> None:
        """Every record written from now on: an ordered consumer of the runs bucket's stream
        that starts at new messages (nats-py's key watch would first hand over every stored
        record, on each rewatch: 100,000 of them for a large store)."""
        sub = await self.client.bus.js.subscribe(
            subjects.kv_keys(subjects.KV_RUNS),
            stream=subjects.kv_stream(subjects.KV_RUNS),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=60)
                except nats.errors.TimeoutError:
                    continue
                if not msg.data:
                    continue  # a delete or purge marker
                try:
                    rec = codec.decode(m.RunRecord, msg.data)
                except codec.BadMessage:
                    continue  # only the scheduler writes records; a later one will do
                self._publish(rec)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub
