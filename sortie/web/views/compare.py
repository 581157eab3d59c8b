"""The compare view: runs picked by id (``/compare?runs=a,b,c``, the Runs page links here
with its checked runs) or found by id prefix or experiment, shown side by side: one chart per
metric with a series per run, and a table of their settings and final metrics with the
differences marked (``comparison.py``)."""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sortie.client.client import Client, NotFound
from sortie.proto import messages as m
from sortie.proto import run_index
from sortie.web import comparison, refusals
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.view import View

FOUND = 20  # runs a search offers at most (newest first)


async def page(request: Request) -> Response:
    ids = comparison.run_ids(request.query_params.get("runs", ""))
    return render(request, "compare.html", max_runs=comparison.MAX_RUNS, picked=ids)


async def _one(client: Client, run_id: str) -> tuple[m.RunRecord, list[m.MetricPoint]] | None:
    try:
        rec = await client.get_run(run_id)
    except NotFound:
        return None
    return rec, await client.metric_points(run_id)


async def api(request: Request) -> Response:
    """``/api/compare?runs=a,b``: the runs' settings, final metrics and metric series."""
    ids = comparison.run_ids(request.query_params.get("runs", ""))
    if (problem := comparison.too_many(ids)) is not None:
        raise HTTPException(400, problem)
    client = client_of(request)
    try:
        found = await asyncio.gather(*(_one(client, i) for i in ids))
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    have = [f for f in found if f is not None]
    data = comparison.compare([rec for rec, _ in have], [pts for _, pts in have])
    data["missing"] = [i for i, f in zip(ids, found, strict=True) if f is None]
    return JSONResponse(data)


async def find(request: Request) -> Response:
    """``/api/compare/find?q=TEXT``: runs whose id contains TEXT or of the experiment TEXT,
    newest first (two queries of the scheduler's run index: no run is read that is not
    shown)."""
    q = request.query_params.get("q", "").strip()
    if not q:
        return JSONResponse({"runs": []})
    client = client_of(request)
    try:
        (by_id, _), (of_experiment, _) = await asyncio.gather(
            client.query_runs(run_index.RunQuery(search=q, limit=FOUND)),
            client.query_runs(run_index.RunQuery(experiment=q, limit=FOUND)),
        )
    except refusals.UNANSWERED as exc:
        raise refusals.refusal(exc) from None
    merged = {r.run_id: r for r in [*by_id, *of_experiment]}
    hits = sorted(merged.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)[:FOUND]
    return JSONResponse(
        {
            "runs": [
                {
                    "run_id": r.run_id,
                    "experiment": r.spec.experiment,
                    "state": str(r.state),
                    "created_at": r.created_at,
                }
                for r in hits
            ]
        }
    )


VIEW = View(
    name="compare",
    title="Compare",
    path="/compare",
    routes=[
        Route("/compare", page),
        Route("/api/compare", api),
        Route("/api/compare/find", find),
    ],
)
