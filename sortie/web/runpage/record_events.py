"""The run's record as it changes, pushed to its page: the run itself and its children
(from the dashboard's one watch of the runs bucket, ``Hub``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from sortie.web import sse
from sortie.web.hub import hub_of
from sortie.web.runpage import facts
from sortie.web.runpage.reading import run_of


async def stream(request: Request) -> Response:
    """``GET /runs/{id}/events``: ``run`` (the live facts; the current ones first, so a page
    that reconnects is up to date) and ``child`` (a child run's state)."""
    run_id = (await run_of(request)).run_id  # no such run: 404, not a stream
    hub = hub_of(request)

    async def events() -> AsyncIterator[sse.Event]:
        updates = hub.runs()
        # subscribe before reading the record: no change falls between the two
        pending = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0)
        try:
            rec = await run_of(request)
            yield sse.Event("run", json.dumps(facts.live(rec, time.time())))
            while True:
                try:
                    changed = await pending
                except StopAsyncIteration:
                    return  # dropped by the hub: the page reconnects and reloads
                pending = asyncio.ensure_future(anext(updates))
                if changed.run_id == run_id:
                    yield sse.Event("run", json.dumps(facts.live(changed, time.time())))
                elif changed.parent_id == run_id:
                    yield sse.Event("child", json.dumps(facts.child(changed)))
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
            aclose = getattr(updates, "aclose", None)  # an async generator's
            if aclose is not None:
                await aclose()

    return sse.stream(request, events())
