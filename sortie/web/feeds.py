"""Polled views shared by all open pages: one request per interval per dashboard, fanned out.

Some things the dashboard shows live have no KV watch to follow: the agents as the scheduler
sees them, the queue in placement order with reasons. A ``Feed`` asks for one of them every
``every_s`` seconds while at least one page follows it, and hands the latest answer to every
page that follows it; with no page following, it asks nothing. However many pages are open,
the scheduler gets one request per interval from this dashboard process.

A page that also reads the view itself (embedded in its HTML, or again after an action) asks
through ``now``: the feed then knows that answer too, so the next change is sent even when it
brings back what the feed had sent before (a cluster created and deleted between two ticks).

A page that falls behind skips to the latest answer (no queue to fill); an answer equal to
the previous one is not sent again. ``poke`` asks now (after an action, so that its page
shows the result at once instead of at the next tick).

    feed = feeds.feed(request, "agents", fetch_agents)   # one per app and name
    return sse.stream(request, feed.follow())
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import structlog
from starlette.requests import Request

from sortie.bus.pause import retry_pause
from sortie.client.client import Client
from sortie.web.hub import client_of

log = structlog.get_logger("sortie.web")

T = TypeVar("T")

EVERY_S = 2.0  # how often a followed feed asks


class Feed(Generic[T]):
    """``news``: what of an answer is news to a page (default: all of it); an answer whose
    news equals the previous one's is not sent again (say, one that differs only in when it
    was read)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        every_s: float = EVERY_S,
        news: Callable[[T], object] | None = None,
    ) -> None:
        self._fetch = fetch
        self.every_s = every_s
        self._news = news or (lambda value: value)
        self._latest: T | None = None
        self._version = 0  # raised with every new answer
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._followers = 0
        self._task: asyncio.Task[None] | None = None
        self._fetching = asyncio.Lock()  # one fetch at a time: the latest answer is the newest

    async def follow(self) -> AsyncGenerator[T, None]:
        """The latest answer (at once, if there is one), then every new one."""
        self._followers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        seen = 0
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(functools.partial(self._newer_than, seen))
                    seen, value = self._version, self._latest
                assert value is not None  # version 0 is the only one without an answer
                yield value
        finally:
            self._followers -= 1
            if self._followers == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
                self._latest, self._version = None, 0  # a stale answer is not shown later

    def _newer_than(self, version: int) -> bool:
        return self._version != version

    def poke(self) -> None:
        """Ask now rather than at the next tick."""
        self._wake.set()

    async def now(self) -> T:
        """A fresh answer for a page that reads for itself; the pages that follow get it too
        when it is news. (``fetch`` must not raise: see ``feed``.)"""
        async with self._fetching:
            value = await self._fetch()
            await self._offer(value)
        return value

    async def _offer(self, value: T) -> None:
        if self._followers == 0:
            return  # nobody follows: nothing kept (the first follower gets a fresh answer)
        if self._latest is None or self._news(value) != self._news(self._latest):
            async with self._changed:
                self._latest = value
                self._version += 1
                self._changed.notify_all()

    async def _poll(self) -> None:
        # a cancel that lands as the wait ends can be lost (asyncio.wait_for before 3.12), so
        # the loop also ends once it is no longer this feed's poller
        while self._task is asyncio.current_task():
            try:
                async with self._fetching:
                    await self._offer(await self._fetch())
            except Exception:  # a fetch that breaks its contract must not stop every page's feed
                log.exception("feed fetch failed; asking again at the next tick")
                await retry_pause(self.every_s)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every_s)


def feed(
    request: Request,
    name: str,
    fetch: Callable[[Client], Awaitable[T]],
    every_s: float = EVERY_S,
    news: Callable[[T], object] | None = None,
) -> Feed[T]:
    """The app's one feed called ``name`` (made on first use). ``fetch`` must not raise: it
    returns what its pages show when the broker or scheduler does not answer, too."""
    feeds: dict[str, Feed[Any]] | None = getattr(request.app.state, "feeds", None)
    if feeds is None:
        feeds = request.app.state.feeds = {}
    found: Feed[T] | None = feeds.get(name)
    if found is None:
        client = client_of(request)
        found = feeds[name] = Feed(lambda: fetch(client), every_s, news)
    return found
