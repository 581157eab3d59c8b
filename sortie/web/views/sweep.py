"""The sweep view: one sweep's spec (space, sampler, policy, limits), state and why it ended,
its best trial so far, its trials (parameters, objective, intervals, why a stopped one
stopped), a parameter-vs-objective scatter and the trials' primary-metric curves overlaid;
and its cancel (the run page's rules: ``access.action_form``).

The page loads ``/api/sweeps/{id}`` (the sweep's record and its trials' records, got by key:
trial i is run ``proto.sweeps.trial_run_id(sweep, i)``, for i below ``Sweep.issued``) and the
curves of its best trials (``/api/sweeps/{id}/curves``: each trial's metric stream read
once). It stays live through ``/sweeps/{id}/events``: the dashboard's one runs watch
(``Hub``) pushes the sweep's record and each trial's as they change; the page then reloads
what changed (debounced), never polling a trial.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import Client, ClientError, NotFound
from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.web import comparison, refusals, sweep_data
from sortie.web.access import action_form
from sortie.web.hub import client_of, hub_of
from sortie.web.pages import render
from sortie.web.runpage.reading import refusal, run_of
from sortie.web.sse import Event, stream
from sortie.web.view import View


async def sweep_of(request: Request) -> m.RunRecord:
    """The sweep of ``{run_id}``; 404 when there is no such run or it is not a sweep."""
    rec = await run_of(request)
    if rec.sweep is None:
        raise HTTPException(404, f"run {rec.run_id} is not a sweep: its page is /runs/{rec.run_id}")
    return rec


async def detail(client: Client, rec: m.RunRecord) -> dict[str, Any]:
    """What the page draws (but the curves): the sweep, its spec, trials, best, scatter."""
    assert rec.sweep is not None
    spec = rec.sweep.spec
    head = sweep_data.summary(rec)
    issued = [sw.trial_run_id(rec.run_id, i) for i in range(rec.sweep.issued)]
    rows = sweep_data.trial_rows(await client.runs_by_id(issued))
    return {
        "sweep": head,
        "spec": sweep_data.spec_facts(spec),
        "trials": rows,
        "best": sweep_data.best(head, rows),
        "scatter": sweep_data.scatter(spec, rows),
        "curve_runs": sweep_data.curve_runs(rows, spec.goal),
    }


async def page(request: Request) -> Response:
    rec = await sweep_of(request)
    try:
        data = await detail(client_of(request), rec)
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    return render(
        request,
        "sweep.html",
        rec=rec,
        data=data,
        terminal=data["sweep"]["terminal"],
        active="sweeps",
    )


async def api(request: Request) -> Response:
    """``/api/sweeps/{id}``: the page's data as JSON."""
    rec = await sweep_of(request)
    try:
        return JSONResponse(await detail(client_of(request), rec))
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None


async def _curve(client: Client, sweep_id: str, run_id: str, metric: str) -> list[float | None]:
    try:
        rec = await client.get_run(run_id)
    except NotFound:
        return []
    if rec.parent_id != sweep_id or rec.trial is None:
        raise HTTPException(400, f"run {run_id} is not a trial of sweep {sweep_id}")
    return sweep_data.curve(await client.metric_points(run_id), metric)


async def curves(request: Request) -> Response:
    """``/api/sweeps/{id}/curves?runs=a,b``: those trials' reports of the primary metric
    (run id -> values; interval n is ``values[n - 1]``); without ``runs``: the page's."""
    rec = await sweep_of(request)
    assert rec.sweep is not None
    client = client_of(request)
    ids = comparison.run_ids(request.query_params.get("runs", ""))
    if len(ids) > sweep_data.MAX_CURVES:
        raise HTTPException(400, f"{len(ids)} curves asked for: at most {sweep_data.MAX_CURVES}")
    metric = rec.sweep.spec.primary_metric
    try:
        if not ids:
            ids = (await detail(client, rec))["curve_runs"]
        found = await asyncio.gather(*(_curve(client, rec.run_id, i, metric) for i in ids))
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    return JSONResponse({"metric": metric, "curves": dict(zip(ids, found, strict=True))})


async def events(request: Request) -> Response:
    """``/sweeps/{id}/events``: ``sweep`` (the sweep's row; the current one first, so a page
    that reconnects is up to date) and ``trial`` (a trial's row) as their records change."""
    sweep_id = (await sweep_of(request)).run_id  # no such sweep: 404, not a stream
    hub = hub_of(request)

    async def changes() -> AsyncIterator[Event]:
        updates = hub.subscribe()  # before reading the record: no change falls between
        try:
            yield Event("sweep", json.dumps(sweep_data.summary(await sweep_of(request))))
            async for rec in updates:
                if rec.run_id == sweep_id and rec.sweep is not None:
                    yield Event("sweep", json.dumps(sweep_data.summary(rec)))
                elif rec.parent_id == sweep_id and rec.trial is not None:
                    yield Event("trial", json.dumps(sweep_data.trial_row(rec)))
        finally:
            await updates.aclose()

    return stream(request, changes())


async def cancel(request: Request) -> Response:
    """``POST /sweeps/{id}/cancel``: the sweep ends and its running trials are canceled (the
    scheduler's to do); the sweep's state after the request."""
    await action_form(request)
    rec = await sweep_of(request)
    try:
        reply = await client_of(request).cancel(rec.run_id)
    except ClientError as exc:
        raise refusal(exc) from None
    return JSONResponse({"ok": True, "run_id": reply.run_id, "state": str(reply.state)})


VIEW = View(
    name="sweep",
    title=None,
    path="",
    routes=[
        Route("/sweeps/{run_id}", page),
        Route("/sweeps/{run_id}/events", events),
        Route("/sweeps/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/api/sweeps/{run_id}", api),
        Route("/api/sweeps/{run_id}/curves", curves),
    ],
)
