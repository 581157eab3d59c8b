"""The run view (to be built: issue K)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sortie.web.pages import render
from sortie.web.view import View


async def page(request: Request) -> Response:
    return render(request, "run.html")


VIEW = View(name="run", title=None, path="", routes=[Route("/runs/{run_id}", page)])
