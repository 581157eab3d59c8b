"""Server-sent events: one response per open page, fed by an async iterator of ``Event``s.

A comment goes out every ``KEEPALIVE_S`` so proxies keep the connection and a closed page is
noticed; the browser's ``EventSource`` reconnects by itself, sending the last event's id
(``Last-Event-ID``), which a stream that can resume (a run's log) starts after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import StreamingResponse

KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class Event:
    name: str  # the event's type: what `EventSource.addEventListener` listens for
    data: str  # one JSON document
    id: str | None = None  # resumes a stream after a reconnect (``Last-Event-ID``)

    def encode(self) -> bytes:
        lines = [f"event: {self.name}"]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        lines.extend(f"data: {part}" for part in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


def last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("after")


def stream(request: Request, events: AsyncIterator[Event]) -> StreamingResponse:
    """The response that sends ``events`` until the page closes or they end."""

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"  # reconnect after 1 s (the broker or this process came back)
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for event in events:
                    await queue.put(event)
            finally:
                await queue.put(None)

        task = asyncio.create_task(pump())
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if event is None:
                    return
                yield event.encode()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
