"""The compute page's live data: one poller per dashboard process, shared by every open page.

While at least one page listens, the feed asks the scheduler for its targets and its compute
list every ``POLL_S`` (two requests, whatever the number of pages) and hands each page the
snapshot when it changed; a page that joins gets the latest at once. With no page open it asks
nothing. A page keeps only the newest snapshot it has not sent yet (a slow page skips to the
latest, it never holds up the others). When the scheduler does not answer, the snapshot says
so (``error``) and keeps the last lists, and polling goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

import msgspec
import nats.errors
from starlette.requests import Request

from sortie.client.client import Client, ClientError
from sortie.proto import messages as m
from sortie.web.compute_data import ComputeSnapshot, snapshot

POLL_S = 2.0  # between two reads of the scheduler's compute list
REQUEST_ERRORS = (ClientError, TimeoutError, nats.errors.Error, OSError)


class ComputeFeed:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.latest: ComputeSnapshot | None = None
        self._encoded: bytes = b""
        self._pages: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None

    async def current(self) -> ComputeSnapshot:
        """The latest snapshot if it is fresh (a poll's age), else one read now."""
        latest = self.latest
        if latest is None or time.time() - latest.at > POLL_S:
            latest = await self._read()
        return latest

    async def snapshots(self) -> AsyncGenerator[bytes, None]:
        """The snapshot (JSON) now, then each changed one, for as long as the page listens."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        if self._encoded:
            queue.put_nowait(self._encoded)
        self._pages.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            while True:
                yield await queue.get()
        finally:
            self._pages.discard(queue)
            if not self._pages and self._task is not None:
                self._task.cancel()
                self._task = None

    async def _poll(self) -> None:
        while self._pages:
            self._publish(await self._read())
            await asyncio.sleep(POLL_S)

    async def _read(self) -> ComputeSnapshot:
        try:
            targets, computes = await asyncio.gather(
                self.client.targets(), self.client.compute(m.ComputeList())
            )
            made = snapshot(targets, computes.computes, computes.vms, time.time())
        except REQUEST_ERRORS as exc:
            made = _stale(self.latest, f"the scheduler did not answer: {exc}")
        self.latest = made
        return made

    def _publish(self, made: ComputeSnapshot) -> None:
        # what changed is what a page draws: the time of the read alone is not news
        encoded = msgspec.json.encode(msgspec.structs.replace(made, at=0.0))
        if encoded == self._encoded:
            return
        self._encoded = encoded
        for queue in list(self._pages):
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()  # an unsent older snapshot: the newest replaces it
            queue.put_nowait(encoded)


def _stale(latest: ComputeSnapshot | None, error: str) -> ComputeSnapshot:
    if latest is None:
        return ComputeSnapshot(at=time.time(), error=error)
    return msgspec.structs.replace(latest, at=time.time(), error=error)


def compute_feed_of(request: Request) -> ComputeFeed:
    """The dashboard's one compute feed, made on first use."""
    state = request.app.state
    feed: ComputeFeed | None = getattr(state, "compute_feed", None)
    if feed is None:
        feed = ComputeFeed(request.app.state.client)
        state.compute_feed = feed
    return feed
