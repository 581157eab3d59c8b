"""The pipeline view: one pipeline run's graph (its steps as boxes in layers, edges for the data
between them and for ``run_after``), each step's state, run and reuse (a reused step links to
the run it took its outputs from; a step that ran says which part of its key changed), skip
and failure reasons, its parameters; its cancel (the run page's rules: ``access.action_form``)
and its rerun (``client.pipeline_submit.rerun_pipeline``: every step whose key is unchanged
is reused, so it resumes after a failure).

The page loads ``/api/pipelines/{id}`` (the pipeline's record and its steps' runs, got by id:
each step's ``StepStatus.run_id``). It stays live through ``/pipelines/{id}/events``: the
dashboard's one runs watch (``Hub``) pushes the pipeline's record and each step run's as they
change; the page then reloads the whole (debounced), never polling a step.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import Client, ClientError
from sortie.client.pipeline_submit import rerun_pipeline
from sortie.proto import messages as m
from sortie.web import pipeline_data, refusals
from sortie.web.access import action_form
from sortie.web.hub import client_of, hub_of
from sortie.web.pages import render
from sortie.web.runpage.reading import refusal, run_of
from sortie.web.sse import Event, stream
from sortie.web.view import View


async def pipeline_of(request: Request) -> m.RunRecord:
    """The pipeline of ``{run_id}``; 404 when there is no such run or it is not a pipeline."""
    rec = await run_of(request)
    if rec.pipeline is None:
        raise HTTPException(
            404, f"run {rec.run_id} is not a pipeline: its page is /runs/{rec.run_id}"
        )
    return rec


async def detail(client: Client, rec: m.RunRecord) -> dict[str, Any]:
    """What the page draws: the pipeline, its graph, its steps (with their runs), parameters."""
    assert rec.pipeline is not None
    runs = await client.runs_by_id(pipeline_data.run_ids(rec.pipeline))
    return pipeline_data.detail(rec, runs)


async def page(request: Request) -> Response:
    rec = await pipeline_of(request)
    try:
        data = await detail(client_of(request), rec)
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    return render(
        request,
        "pipeline.html",
        rec=rec,
        data=data,
        terminal=data["pipeline"]["terminal"],
        active="pipelines",
    )


async def api(request: Request) -> Response:
    """``/api/pipelines/{id}``: the page's data as JSON."""
    rec = await pipeline_of(request)
    try:
        return JSONResponse(await detail(client_of(request), rec))
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None


async def events(request: Request) -> Response:
    """``/pipelines/{id}/events``: ``pipeline`` (its row; the current one first, so a page
    that reconnects is up to date) and ``step`` (a step run's state) as their records
    change."""
    pipeline_id = (await pipeline_of(request)).run_id  # no such pipeline: 404, not a stream
    hub = hub_of(request)

    async def changes() -> AsyncIterator[Event]:
        updates = hub.subscribe()  # before reading the record: no change falls between
        try:
            yield Event("pipeline", json.dumps(pipeline_data.summary(await pipeline_of(request))))
            async for rec in updates:
                if rec.run_id == pipeline_id and rec.pipeline is not None:
                    yield Event("pipeline", json.dumps(pipeline_data.summary(rec)))
                elif rec.parent_id == pipeline_id and rec.step is not None:
                    yield Event("step", json.dumps(pipeline_data.step_run(rec)))
        finally:
            await updates.aclose()

    return stream(request, changes())


async def cancel(request: Request) -> Response:
    """``POST /pipelines/{id}/cancel``: the pipeline starts no more steps and its running
    steps are canceled (the scheduler's to do); the pipeline's state after the request."""
    await action_form(request)
    rec = await pipeline_of(request)
    try:
        reply = await client_of(request).cancel(rec.run_id)
    except ClientError as exc:
        raise refusal(exc) from None
    return JSONResponse({"ok": True, "run_id": reply.run_id, "state": str(reply.state)})


async def rerun(request: Request) -> Response:
    """``POST /pipelines/{id}/rerun``: the pipeline submitted again with the same parameters
    (every step whose key is unchanged is reused); the new pipeline run's id."""
    await action_form(request)
    rec = await pipeline_of(request)
    try:
        new_id = await rerun_pipeline(client_of(request), rec.run_id)
    except refusals.UNANSWERED as exc:  # the scheduler refused it (it says why), or is away
        raise refusals.refusal(exc) from None
    return JSONResponse({"ok": True, "run_id": new_id})


VIEW = View(
    name="pipeline",
    title=None,
    path="",
    routes=[
        Route("/pipelines/{run_id}", page),
        Route("/pipelines/{run_id}/events", events),
        Route("/pipelines/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/pipelines/{run_id}/rerun", rerun, methods=["POST"]),
        Route("/api/pipelines/{run_id}", api),
    ],
)
