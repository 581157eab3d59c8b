"""The run view: one run's header, state timeline, live logs, metrics, details, files and
actions. Its parts live in ``sortie/web/runpage/``; this module renders the page and names
every route."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.client.resubmit import resubmit_refusal
from sortie.client.submit_command import submit_command
from sortie.web.hub import client_of
from sortie.web.pages import render
from sortie.web.runpage import actions, facts, files, logs, metrics, record_events
from sortie.web.runpage.reading import run_of
from sortie.web.view import View


async def page(request: Request) -> Response:
    rec = await run_of(request)
    command = submit_command(rec.spec)
    kids = await client_of(request).children(rec.run_id)
    return render(
        request,
        "run.html",
        rec=rec,
        spec=rec.spec,
        live=facts.live(rec, time.time()),
        details=facts.details(rec.spec),
        children=[facts.child(k) for k in kids],
        command=command,
        resubmit_refusal=resubmit_refusal(rec),
        images=[a for a in rec.artifacts if facts.is_image(a.path)],
        active="runs",
    )


VIEW = View(
    name="run",
    title=None,
    path="",
    routes=[
        Route("/runs/{run_id}", page),
        Route("/runs/{run_id}/events", record_events.stream),
        Route("/runs/{run_id}/logs/stream", logs.stream),
        Route("/runs/{run_id}/logs.txt", logs.download),
        Route("/runs/{run_id}/metrics/stream", metrics.stream),
        Route("/runs/{run_id}/artifacts/{path:path}", files.artifact),
        Route("/runs/{run_id}/snapshot", files.snapshot),
        Route("/runs/{run_id}/snapshot/{path:path}", files.snapshot_file),
        Route("/runs/{run_id}/cancel", actions.cancel, methods=["POST"]),
        Route("/runs/{run_id}/resubmit", actions.resubmit, methods=["POST"]),
    ],
)
