"""The runs view: one page of the scheduler's run index, newest first, with filters, a cursor
pager and live rows.

A page load is one index query and one get per row shown (``Client.query_runs``), never a read
of every record. The rows go to the page as JSON (``row``), which ``static/views/runs.js``
draws; the same rows come live from ``/api/runs/events`` (the dashboard's one runs watch,
``Hub.runs``), filtered here by the page's filters: a run that matches them is added at the top
of the first page, and a run shown is updated in place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import ClientError, NoScheduler
from sortie.client.views import children_under_parents
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.proto.waiting import shown_state
from sortie.web.hub import client_of, hub_of
from sortie.web.pages import render
from sortie.web.sse import Event, stream
from sortie.web.view import View

PAGE_SIZE = 50
MAX_PAGE = 200  # ?limit= at most
SHOWN_METRICS = 3  # latest metric values per row


class BadFilter(ValueError):
    """A filter of the page's address that cannot be read: the message says which and why."""


def _cursor(text: str | None, name: str) -> q.RunCursor | None:
    """``CREATED_AT,RUN_ID`` (what the pager's links carry)."""
    if not text:
        return None
    created, _, run_id = text.partition(",")
    try:
        return q.RunCursor(created_at=float(created), run_id=run_id)
    except ValueError:
        raise BadFilter(f"{name}={text!r} is not a page cursor; open the first page") from None


def _states(params: QueryParams) -> list[RunState]:
    try:
        return [RunState(s) for s in params.getlist("state") if s]
    except ValueError as exc:
        known = ", ".join(str(s) for s in RunState)
        raise BadFilter(f"{exc}; a state is one of {known}") from None


def _limit(params: QueryParams) -> int:
    text = params.get("limit") or str(PAGE_SIZE)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadFilter(f"limit={text!r}: a page shows 1 to {MAX_PAGE} runs")
    return int(text)


def query_of(params: QueryParams) -> q.RunQuery:
    """The page's filters and cursor, from its address."""
    tags = []
    for text in params.getlist("tag"):
        key, eq, value = text.partition("=")
        if key:
            tags.append((key, value if eq else None))
    return q.RunQuery(
        experiment=params.get("experiment") or None,
        states=_states(params),
        target=params.get("target") or None,
        tags=tags,
        search=params.get("search") or None,
        limit=_limit(params),
        before=_cursor(params.get("before"), "before"),
        after=_cursor(params.get("after"), "after"),
    )


def row(rec: m.RunRecord) -> dict[str, Any]:
    """What a row of the runs table shows of a run (the page's script draws it)."""
    git = rec.spec.git
    return {
        "run_id": rec.run_id,
        "parent_id": rec.parent_id,
        "state": str(shown_state(rec)),
        "experiment": rec.spec.experiment,
        "target": rec.spec.target,
        "agent_id": rec.agent_id,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "metrics": dict(sorted(rec.metrics.items())[:SHOWN_METRICS]),
        "commit": git.commit[:8] if git is not None and git.commit else None,
        "dirty": bool(git is not None and git.dirty),
        "sweep": rec.sweep is not None,  # its page is /sweeps/RUN_ID
        "trial": None if rec.trial is None else rec.trial.index,
        "pipeline": rec.pipeline is not None,  # its page is /pipelines/RUN_ID
        "step": rec.step,  # a pipeline's step: the step's name (its pipeline is its parent)
    }


def _filters(params: QueryParams) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params.multi_items() if k not in ("before", "after")]


def page_link(params: QueryParams, **cursor: q.RunCursor | None) -> str | None:
    """The address of the page at ``cursor`` with the same filters (None: no such page)."""
    ((name, at),) = cursor.items()
    if at is None:
        return None
    return "?" + urlencode([*_filters(params), (name, f"{at.created_at!r},{at.run_id}")])


@dataclass(frozen=True)
class Listing:
    """A page of the scheduler's run index, kept live (the runs page, the sweeps page): its
    query from the page's address, its rows from the records, a record changed as it shows."""

    what: str  # "runs", "sweeps": what a refusal says is not listed
    query: Callable[[QueryParams], q.RunQuery]
    rows: Callable[[list[m.RunRecord]], list[dict[str, Any]]]
    live: Callable[[m.RunRecord], dict[str, Any] | None]  # None: not on this page
    event: str  # the live event's name


async def page_data(request: Request, listing: Listing) -> tuple[dict[str, Any], int]:
    """The page's rows, pager and note; the HTTP status (400: its address is wrong)."""
    params = request.query_params
    data: dict[str, Any] = {"rows": [], "total": 0, "first": True, "error": None}
    try:
        query = listing.query(params)
        records, page = await client_of(request).query_runs(query)
    except BadFilter as exc:
        return {**data, "error": str(exc)}, 400
    except NoScheduler:
        why = (
            f"no scheduler is answering ({listing.what} are listed from its index): "
            "start it and reload"
        )
        return {**data, "error": why}, 503
    except ClientError as exc:  # the scheduler refused the query: it says why
        return {**data, "error": str(exc)}, 400
    data.update(
        rows=listing.rows(records),
        total=page.total,
        first=query.before is None and query.after is None,
        older=page_link(params, before=page.older),
        newer=page_link(params, after=page.newer),
        newest="?" + urlencode(_filters(params)),
    )
    return data, 200


async def api_data(request: Request, listing: Listing) -> Response:
    """The page's data as JSON (``{"code", "message"}`` when refused)."""
    data, status = await page_data(request, listing)
    if status != 200:
        code = "no_scheduler" if status == 503 else "bad_request"
        return JSONResponse({"code": code, "message": data["error"]}, status_code=status)
    return JSONResponse(data)


def live_rows(request: Request, listing: Listing) -> Response:
    """Changed and new rows for an open page: of the runs its fixed filters keep (all but
    state and tags), each with ``match``: whether it passes every filter now (state and tags
    change as a run goes on)."""
    try:
        query = listing.query(request.query_params)
    except BadFilter as exc:
        return JSONResponse({"code": "bad_request", "message": str(exc)}, status_code=400)
    fixed = msgspec.structs.replace(query, states=[], tags=[])
    hub = hub_of(request)

    async def changes() -> AsyncIterator[Event]:
        async for rec in hub.runs():
            if not q.keeps(fixed, rec) or (shown := listing.live(rec)) is None:
                continue
            yield Event(listing.event, json.dumps({**shown, "match": q.keeps(query, rec)}))

    return stream(request, changes())


RUNS = Listing(
    what="runs",
    query=query_of,
    rows=lambda records: [row(r) for r in children_under_parents(records)],
    live=row,
    event="run",
)


async def page(request: Request) -> Response:
    """The page (200 even when refused: it shows why, and its filters to correct)."""
    data, _ = await page_data(request, RUNS)
    params = request.query_params
    return render(
        request,
        "runs.html",
        data=data,
        filters={
            "experiment": params.get("experiment", ""),
            "state": params.get("state", ""),
            "target": params.get("target", ""),
            "tag": params.get("tag", ""),
            "search": params.get("search", ""),
            "limit": params.get("limit", ""),
        },
        states=[str(s) for s in RunState],
    )


async def api_page(request: Request) -> Response:
    return await api_data(request, RUNS)


async def events(request: Request) -> Response:
    """Changed and new runs for an open runs page (``live_rows``)."""
    return live_rows(request, RUNS)


VIEW = View(
    name="runs",
    title="Runs",
    path="/runs",
    routes=[
        Route("/runs", page),
        Route("/api/runs", api_page),
        Route("/api/runs/events", events),
    ],
)
