"""The compute page's live data: a shared ``feeds.Feed`` of ``ComputeSnapshot``s.

While at least one page listens, the feed asks the scheduler for its targets and its compute
list every ``feeds.EVERY_S`` (two requests, whatever the number of pages) and hands each page
the snapshot when it changed (the time of the read alone is not news). When the scheduler does
not answer, the snapshot says so (``error``) and keeps the last lists, and polling goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from starlette.requests import Request

from sortie.client.client import Client, ClientError
from sortie.proto import messages as m
from sortie.web import feeds
from sortie.web.compute_data import ComputeSnapshot, snapshot

REQUEST_ERRORS = (ClientError, TimeoutError, nats.errors.Error, OSError)


async def read(client: Client, latest: ComputeSnapshot | None = None) -> ComputeSnapshot:
    """The snapshot now; without an answer, ``latest``'s lists with the error."""
    try:
        targets, computes = await asyncio.gather(client.targets(), client.compute(m.ComputeList()))
    except REQUEST_ERRORS as exc:
        error = f"the scheduler did not answer: {exc}"
        if latest is None:
            return ComputeSnapshot(at=time.time(), error=error)
        return msgspec.structs.replace(latest, at=time.time(), error=error)
    return snapshot(targets, computes.computes, computes.vms, time.time())


def news(snap: ComputeSnapshot) -> ComputeSnapshot:
    return msgspec.structs.replace(snap, at=0.0)


def _reader() -> Callable[[Client], Awaitable[ComputeSnapshot]]:
    """``read`` that remembers its last snapshot (what a stale one keeps)."""
    last: list[ComputeSnapshot] = []

    async def fetch(client: Client) -> ComputeSnapshot:
        made = await read(client, last[-1] if last else None)
        last[:] = [made]
        return made

    return fetch


def compute_feed(client: Client) -> feeds.Feed[ComputeSnapshot]:
    """A feed of ``client``'s snapshots (the app keeps one: ``compute_feed_of``)."""
    fetch = _reader()
    return feeds.Feed(lambda: fetch(client), news=news)


def compute_feed_of(request: Request) -> feeds.Feed[ComputeSnapshot]:
    """The dashboard's one compute feed, made on first use."""
    return feeds.feed(request, "compute", _reader(), news=news)
