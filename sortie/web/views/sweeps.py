"""The sweeps view: hyperparameter sweeps (runs with ``RunRecord.sweep`` set), newest first, from
the scheduler's run index (``RunQuery(sweeps=True)``), with the runs page's filters and pager
(``views/runs.py``) and live rows.

A row says how far the sweep got (trials issued of its most), its best objective and trial,
its primary metric and goal, sampler and policy (``sweep_data.summary``). The rows come live
from ``/api/sweeps/events`` (the dashboard's one runs watch, ``Hub``), like the runs page's.
"""

from __future__ import annotations

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.web import sweep_data
from sortie.web.pages import render
from sortie.web.view import View
from sortie.web.views.runs import Listing, api_data, live_rows, page_data, query_of


def sweep_query(params: QueryParams) -> q.RunQuery:
    """The page's filters and cursor (the runs page's), for sweep runs only."""
    return msgspec.structs.replace(query_of(params), sweeps=True, include_children=False)


SWEEPS = Listing(
    what="sweeps",
    query=sweep_query,
    rows=lambda records: [sweep_data.summary(r) for r in records if r.sweep is not None],
    live=lambda rec: None if rec.sweep is None else sweep_data.summary(rec),
    event="sweep",
)


async def page(request: Request) -> Response:
    data, _ = await page_data(request, SWEEPS)
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
    return await api_data(request, SWEEPS)


async def events(request: Request) -> Response:
    """``/api/sweeps/events``: changed and new sweeps for an open page (``runs.live_rows``)."""
    return live_rows(request, SWEEPS)


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
