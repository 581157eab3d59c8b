"""The agents view: every agent with its state, heartbeat age, capacity used and free, GPUs,
and the runs on it; cordon, uncordon and drain. Live from one shared feed (``feeds.py``): one
`agent list` request every two seconds per dashboard, however many pages are open."""

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
from sortie.proto import messages as m
from sortie.web import feeds, refusals, sse
from sortie.web.access import action_form
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.view import View

ACTIONS = ("cordon", "uncordon", "drain")


def _status(a: m.AgentRecord, usage: m.AgentUsage | None) -> str:
    if usage is not None:
        return usage.status
    # a scheduler older than AgentListReply.usage
    if a.state == "lost":
        return "lost"
    return "draining" if a.draining else "cordoned" if a.cordoned else "ready"


def agent_row(a: m.AgentRecord, usage: m.AgentUsage | None) -> dict[str, Any]:
    """One agent as the page shows it: capacity, what its runs use, and what is free."""
    used = usage.used if usage is not None else m.Capacity(cpus=0, memory_mb=0)
    cap = a.capacity
    return {
        "agent_id": a.agent_id,
        "target": a.target,
        "hostname": a.hostname,
        "status": _status(a, usage),
        "last_seen": a.last_seen,
        "first_seen": a.first_seen,
        "priority": a.priority,
        "isolation": a.isolation,
        "container_engine": a.container_engine,
        "labels": a.labels,
        "capacity": msgspec.to_builtins(cap),
        "used": {"cpus": used.cpus, "memory_mb": used.memory_mb, "gpus": used.gpus},
        "free": {
            "cpus": max(0.0, cap.cpus - used.cpus),
            "memory_mb": max(0, cap.memory_mb - used.memory_mb),
            "gpus": max(0, cap.gpus - used.gpus),
        },
        "gpus": msgspec.to_builtins(a.gpus),
        "runs": usage.runs if usage is not None else [],
    }


def agents_json(reply: m.AgentListReply, now: float) -> dict[str, Any]:
    held = {u.agent_id: u for u in reply.usage}
    return {"now": now, "agents": [agent_row(a, held.get(a.agent_id)) for a in reply.agents]}


async def _fetch(client: Client) -> sse.Event:
    """The agents event, or the error event that says why there is none."""
    try:
        reply = await client.agents(m.AgentList())
    except refusals.UNANSWERED as exc:
        return sse.Event("problem", json.dumps({"message": refusals.message(exc)}))
    return sse.Event("agents", json.dumps(agents_json(reply, time.time())))


def _feed(request: Request) -> feeds.Feed[sse.Event]:
    return feeds.feed(request, "agents", _fetch)


async def page(request: Request) -> Response:
    return render(request, "agents.html")


async def api(request: Request) -> Response:
    try:
        reply = await client_of(request).agents(m.AgentList())
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    return JSONResponse(agents_json(reply, time.time()))


async def stream(request: Request) -> Response:
    return sse.stream(request, _feed(request).follow())


async def act(request: Request) -> Response:
    """Cordon, uncordon or drain an agent (POST, by a viewer who may act)."""
    await action_form(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise HTTPException(404, f"no agent action {action!r}: {', '.join(ACTIONS)}")
    agent_id = request.path_params["agent_id"]
    try:
        reply = await client_of(request).agents(m.AgentAdmin(agent_id=agent_id, action=action))
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    _feed(request).poke()  # every open agents page shows it now, not at the next tick
    agent: m.AgentRecord = reply.agent
    return JSONResponse({"ok": True, "agent_id": agent.agent_id, "action": action})


VIEW = View(
    name="agents",
    title="Agents",
    path="/agents",
    routes=[
        Route("/agents", page),
        Route("/api/agents", api),
        Route("/agents/stream", stream),
        Route("/agents/{agent_id}/{action}", act, methods=["POST"]),
    ],
)
