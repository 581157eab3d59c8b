"""The sweeps view: hyperparameter sweeps (runs with ``RunRecord.sweep`` set), newest first, from
the scheduler's run index (``RunQuery(sweeps=True)``), with the runs page's filters and pager
(``views/runs.py``) and live rows.

A row says how far the sweep got (trials issued of its most), its best objective and trial,
its primary metric and goal, sampler and policy (``sweep_data.summary``). The rows come live
from ``/api/sweeps/events`` (the dashboard's one runs watch, ``Hub``), like the runs page's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import ClientError, NoScheduler
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.web import sweep_data
from sortie.web.hub import client_of, hub_of
from sortie.web.pages import render
from sortie.web.sse import Event, stream
from sortie.web.view import View
from sortie.web.views.runs import BadFilter, page_link, query_of

CURSORS = ("before", "after")


def sweep_query(params: QueryParams) -> q.RunQuery:
    """The page's filters and cursor (the runs page's), for sweep runs only."""
    return msgspec.structs.replace(query_of(params), sweeps=True, include_children=False)


async def _page_data(request: Request) -> tuple[dict[str, Any], int]:
    """The page's rows, pager and note; the HTTP status (400: its address is wrong)."""
    params = request.query_params
    data: dict[str, Any] = {"rows": [], "total": 0, "error": None}
    try:
        query = sweep_query(params)
        records, page = await client_of(request).query_runs(query)
    except BadFilter as exc:
        return {**data, "error": str(exc)}, 400
    except NoScheduler:
        why = "no scheduler is answering (sweeps are listed from its index): start it and reload"
        return {**data, "error": why}, 503
    except ClientError as exc:
        return {**data, "error": str(exc)}, 400
    data.update(
        rows=[sweep_data.summary(r) for r in records if r.sweep is not None],
        total=page.total,
        first=query.before is None and query.after is None,
        older=page_link(params, before=page.older),
        newer=page_link(params, after=page.newer),
        newest="?" + urlencode([(k, v) for k, v in params.multi_items() if k not in CURSORS]),
    )
    return data, 200


async def page(request: Request) -> Response:
    data, _ = await _page_data(request)
    params = request.query_params
    return render(
        request,
        "sweeps.html",
        data=data,
        filters={k: params.get(k, "") for k in ("experiment", "state", "search", "limit")},
        states=[str(s) for s in RunState],
    )


async def api_page(request: Request) -> Response:
    """``/api/sweeps``: the page's rows as JSON (``{"code", "message"}`` when refused)."""
    data, status = await _page_data(request)
    if status != 200:
        code = "no_scheduler" if status == 503 else "bad_request"
        return JSONResponse({"code": code, "message": data["error"]}, status_code=status)
    return JSONResponse(data)


async def events(request: Request) -> Response:
    """``/api/sweeps/events``: changed and new sweeps the page's fixed filters keep, each with
    ``match``: whether it passes every filter now (its state changes as it goes on)."""
    try:
        query = sweep_query(request.query_params)
    except BadFilter as exc:
        return JSONResponse({"code": "bad_request", "message": str(exc)}, status_code=400)
    fixed = msgspec.structs.replace(query, states=[], tags=[])
    hub = hub_of(request)

    async def changes() -> AsyncIterator[Event]:
        async for rec in hub.runs():
            if rec.sweep is None or not q.keeps(fixed, rec):
                continue
            shown = {**sweep_data.summary(rec), "match": q.keeps(query, rec)}
            yield Event("sweep", json.dumps(shown))

    return stream(request, changes())


VIEW = View(
    name="sweeps",
    title="Sweeps",
    path="/sweeps",
    routes=[
        Route("/sweeps", page),
        Route("/api/sweeps", api_page),
        Route("/api/sweeps/events", events),
    ],
)
