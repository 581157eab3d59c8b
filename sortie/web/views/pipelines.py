"""The pipelines view: pipeline runs (runs with ``RunRecord.pipeline`` set), newest first, from
the scheduler's run index (``RunQuery(pipelines=True)``), with the runs page's filters and pager
(``views/runs.py``) and live rows.

A row says the pipeline's name, experiment and state, how many of its steps completed, were
reused, failed or were skipped (``pipeline_data.summary``), when it started and how long it
took. The rows come live from ``/api/pipelines/events`` (the dashboard's one runs watch,
``Hub``), like the runs page's.
"""

from __future__ import annotations

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.web import pipeline_data
from sortie.web.pages import render
from sortie.web.view import View
from sortie.web.views.runs import Listing, api_data, live_rows, page_data, query_of


def pipeline_query(params: QueryParams) -> q.RunQuery:
    """The page's filters and cursor (the runs page's), for pipeline runs only."""
    return msgspec.structs.replace(query_of(params), pipelines=True, include_children=False)


PIPELINES = Listing(
    what="pipelines",
    query=pipeline_query,
    rows=lambda records: [pipeline_data.summary(r) for r in records if r.pipeline is not None],
    live=lambda rec: None if rec.pipeline is None else pipeline_data.summary(rec),
    event="pipeline",
)


async def page(request: Request) -> Response:
    data, _ = await page_data(request, PIPELINES)
    params = request.query_params
    return render(
        request,
        "pipelines.html",
        data=data,
        filters={k: params.get(k, "") for k in ("experiment", "state", "search", "limit")},
        states=[str(s) for s in RunState],
    )


async def api_page(request: Request) -> Response:
    """``/api/pipelines``: the page's rows as JSON (``{"code", "message"}`` when refused)."""
    return await api_data(request, PIPELINES)


async def events(request: Request) -> Response:
    """``/api/pipelines/events``: changed and new pipelines for an open page
    (``runs.live_rows``)."""
    return live_rows(request, PIPELINES)


VIEW = View(
    name="pipelines",
    title="Pipelines",
    path="/pipelines",
    routes=[
        Route("/pipelines", page),
        Route("/api/pipelines", api_page),
        Route("/api/pipelines/events", events),
    ],
)
