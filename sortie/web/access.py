"""Who is looking, and whether they may act: the dashboard's gate.

A request is let in as a ``Viewer`` or sent to the login form. `sortie up`'s dashboard on
loopback lets in whoever reaches it (``WebSettings.open``) as long as the request names a
loopback host (a page of another site that rebinds a DNS name to 127.0.0.1 names its own host,
and is refused). Anywhere else a token minted by `sortie auth web-token` is needed: from the
login form's cookie, or an ``Authorization: Bearer`` header (``tokens.py`` looks it up).

Actions (every method but GET and HEAD) need a viewer that may act (not a read-only token)
and the page's CSRF token (``csrf`` form field or ``X-CSRF-Token`` header), bound to the
viewer's session by an HMAC with a key of this process; a request whose ``Origin`` is not this
dashboard is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from sortie.web.settings import WebSettings, is_loopback

COOKIE = "sortie_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# paths anyone may fetch: the login form, the assets, the health check
PUBLIC_PREFIXES = ("/static/", "/login", "/healthz")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Viewer:
    can_act: bool  # False: a read-only token
    session: str  # what the CSRF token is bound to: "open", or the token's hash
    label: str  # shown in the page's header ("local", or the token's label)


OPEN = Viewer(can_act=True, session="open", label="local")  # `sortie up`'s, on loopback


def opens_without_login(settings: WebSettings, headers: Headers) -> bool:
    """`sortie up`'s dashboard on loopback, asked for by a loopback name (not a DNS name
    another site rebound to 127.0.0.1)."""
    host = urlsplit(f"//{headers.get('host', '')}").hostname or ""
    return settings.open and is_loopback(host)


class TokenLookup(Protocol):
    async def lookup(self, token: str) -> Viewer | None:
        """The viewer a presented token makes, or None (unknown, expired or revoked)."""
        ...


class Gate:
    """The ASGI middleware that lets a request in as a ``Viewer`` (``request.state.viewer``)
    or turns it away."""

    def __init__(self, app: ASGIApp, settings: WebSettings, tokens: TokenLookup) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.key = secrets.token_bytes(32)  # CSRF tokens are valid for this process's life

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        scope.setdefault("state", {})
        scope["state"]["csrf_key"] = self.key
        if path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        viewer = await self.viewer(headers)
        if viewer is None:
            await self.refuse(scope, headers, path)(scope, receive, send)
            return
        scope["state"]["viewer"] = viewer
        await self.app(scope, receive, send)

    async def viewer(self, headers: Headers) -> Viewer | None:
        if self.settings.open:
            return OPEN if opens_without_login(self.settings, headers) else None
        token = presented_token(headers)
        return await self.tokens.lookup(token) if token else None

    def refuse(self, scope: Scope, headers: Headers, path: str) -> Response:
        root = scope.get("root_path", "")
        wants_page = scope.get("method") == "GET" and "text/html" in headers.get("accept", "")
        if wants_page:
            target = path + (
                f"?{scope['query_string'].decode()}" if scope.get("query_string") else ""
            )
            return RedirectResponse(f"{root}/login?next={quote(target)}", status_code=303)
        return JSONResponse(
            {
                "code": "unauthorized",
                "message": "this dashboard needs a token: `sortie auth "
                "web-token` mints one; send it as `Authorization: Bearer TOKEN` or log in",
            },
            status_code=401,
        )


def presented_token(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def viewer(request: Request) -> Viewer:
    found: Viewer = request.state.viewer
    return found


def csrf_token(request: Request) -> str:
    """The token a page's forms and scripts send back with an action."""
    key: bytes = request.state.csrf_key
    return hmac.new(key, viewer(request).session.encode(), hashlib.sha256).hexdigest()


async def action_form(request: Request) -> FormData:
    """The form of an action, once the viewer may act and the CSRF token and origin match;
    otherwise ``HTTPException(403)`` saying why. Every handler that changes something calls
    this first (JSON actions send the token in ``X-CSRF-Token`` and get an empty form)."""
    if not viewer(request).can_act:
        raise HTTPException(
            403,
            "this token is read-only: actions need a token minted by "
            "`sortie auth web-token` without --read-only",
        )
    check_origin(request)
    form = await request.form()
    sent = request.headers.get("x-csrf-token") or str(form.get("csrf") or "")
    if not hmac.compare_digest(sent, csrf_token(request)):
        raise HTTPException(
            403,
            "this page's form is stale (the dashboard restarted or you "
            "logged in again): reload the page and try again",
        )
    return form


def check_origin(request: Request) -> None:
    """``HTTPException(403)`` for a request another site's page sent (its ``Origin``). Behind
    a reverse proxy that passes its own ``Host`` upstream (nginx's default), the browser's
    origin is the one the proxy names in ``X-Forwarded-Host`` (a page of another site cannot
    set that header: a custom header makes its request a CORS preflight, which is refused)."""
    origin = request.headers.get("origin")
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    ours = {request.headers.get("host", ""), forwarded}
    if origin and urlsplit(origin).netloc not in ours - {""}:
        raise HTTPException(403, f"an action from another site ({origin}) was refused")
