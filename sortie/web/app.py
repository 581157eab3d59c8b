"""The dashboard's ASGI app: the gate, the views, the assets and the broker client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from sortie.client.client import Client
from sortie.web import login
from sortie.web.access import Gate, TokenLookup, Viewer
from sortie.web.headers import SecurityHeaders
from sortie.web.hub import Hub
from sortie.web.settings import WebSettings
from sortie.web.tokens import TokenBook
from sortie.web.views import VIEWS

STATIC = Path(__file__).parent / "static"


async def _home(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/runs", status_code=303)


async def _healthz(_: Request) -> Response:
    return PlainTextResponse("ok")


async def _http_error(request: Request, exc: Exception) -> Response:
    """A refusal says why: JSON for scripts, a short page for people."""
    assert isinstance(exc, HTTPException)
    if "text/html" in request.headers.get("accept", ""):
        return PlainTextResponse(f"{exc.status_code}: {exc.detail}", status_code=exc.status_code)
    code = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
    return JSONResponse(
        {"code": code.get(exc.status_code, "error"), "message": exc.detail},
        status_code=exc.status_code,
    )


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/", _home),
        Route("/healthz", _healthz),
        *login.ROUTES,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    for view in VIEWS:
        found.extend(view.routes)
    return found


class _Tokens:
    """The token book, once the lifespan has started it (the gate is made before)."""

    book: TokenLookup | None = None

    async def lookup(self, token: str) -> Viewer | None:
        return await self.book.lookup(token) if self.book is not None else None


def create_app(
    settings: WebSettings, client: Client | None = None, tokens: TokenLookup | None = None
) -> Starlette:
    """The dashboard for ``settings``. ``client``: an open broker client to use (tests);
    otherwise it connects when it starts, as the CLI does, and closes when it stops.
    ``tokens``: where tokens are looked up (default: the broker's, ``tokens.TokenBook``)."""
    holder = _Tokens()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = client is None
        bus_client = client or await Client.connect(
            settings.url,
            name="sortie-web",
            creds=settings.creds,
            tls_ca=settings.tls_ca,
            stay_connected=True,  # a broker restart must not leave the dashboard dead
        )
        book = TokenBook(bus_client) if tokens is None else None
        if book is not None:
            await book.start()
        holder.book = book or tokens
        hub = Hub(bus_client)
        hub.start()
        app.state.client = bus_client
        app.state.hub = hub
        app.state.settings = settings
        app.state.tokens = holder
        try:
            yield
        finally:
            await hub.stop()
            if book is not None:
                await book.stop()
            if own:
                await bus_client.close()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.add_middleware(Gate, settings=settings, tokens=holder)
    app.add_middleware(SecurityHeaders)  # outermost: refusals carry the headers too
    return app
