"""The experiments view: one row per experiment, from the scheduler's run index (run counts by
state, the latest run, the best value of a chosen metric), each linking to its runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.client.client import ClientError, NoScheduler
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.view import View


async def page(request: Request) -> Response:
    metric = request.query_params.get("metric", "").strip() or None
    goal: q.Goal = "min" if request.query_params.get("goal") == "min" else "max"
    error, found = None, q.ExperimentList(experiments=[])  # the page says why it is empty
    try:
        found = await client_of(request).experiments(q.ExperimentsQuery(metric=metric, goal=goal))
    except NoScheduler:
        error = "no scheduler is answering (experiments come from its index): start it"
    except ClientError as exc:
        error = str(exc)
    return render(
        request,
        "experiments.html",
        experiments=found.experiments,
        metric=metric or "",
        goal=goal,
        error=error,
        states=[str(s) for s in RunState],
    )


VIEW = View(
    name="experiments",
    title="Experiments",
    path="/experiments",
    routes=[Route("/experiments", page)],
)
