"""The queue view: queued runs in placement order with their position and counted pending
reasons (what `sortie run why` says). Live from one shared feed (``feeds.py``): one queue
request every two seconds per dashboard, however many pages are open."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import Client
from sortie.proto.queue import MAX_LIMIT, QueueReply
from sortie.web import feeds, refusals, sse
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.view import View

SHOWN = 200  # queued runs the live page lists (the total is counted)


def queue_json(reply: QueueReply, now: float) -> dict[str, Any]:
    return {"now": now, "total": reply.total, "runs": msgspec.to_builtins(reply.runs)}


async def _fetch(client: Client) -> sse.Event:
    try:
        reply = await client.queue(limit=SHOWN)
    except refusals.UNANSWERED as exc:
        return sse.Event("problem", json.dumps({"message": refusals.message(exc)}))
    return sse.Event("queue", json.dumps(queue_json(reply, time.time())))


async def page(request: Request) -> Response:
    return render(request, "queue.html", shown=SHOWN)


async def api(request: Request) -> Response:
    """``/api/queue?limit=N&target=NAME``: the first N queued runs in placement order."""
    raw = request.query_params.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"limit {raw!r}: give a number from 1 to {MAX_LIMIT}")
    target = request.query_params.get("target") or None
    try:
        reply = await client_of(request).queue(limit=limit, target=target)
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    return JSONResponse(queue_json(reply, time.time()))


async def stream(request: Request) -> Response:
    return sse.stream(request, feeds.feed(request, "queue", _fetch).follow())


VIEW = View(
    name="queue",
    title="Queue",
    path="/queue",
    routes=[
        Route("/queue", page),
        Route("/api/queue", api),
        Route("/queue/stream", stream),
    ],
)
