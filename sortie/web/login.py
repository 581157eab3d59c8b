"""The login form: a token in, an HttpOnly cookie out; and logging out.

The form is protected against cross-site posting too (login CSRF: another site's page logging
a browser in with a token of its choosing): showing it sets a short-lived random cookie, and
the form carries that value's HMAC under the gate's key; a POST whose cookie and field do not
match, or whose ``Origin`` is another site, is refused. The token travels in the POST body only,
never in a URL, and is stored nowhere but in the browser's cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sortie.web import access
from sortie.web.pages import templates

LOGIN_COOKIE = "sortie_login"  # the random value the login form's CSRF field is bound to
LOGIN_FORM_S = 3600  # a login form left open longer than this is stale


def _next(request: Request, raw: str) -> str:
    """Where to go after logging in: a path of this dashboard only (never another site)."""
    parts = urlsplit(raw)
    path = raw if raw.startswith("/") and not raw.startswith("//") and not parts.netloc else "/runs"
    if "\\" in path:  # browsers read "/\\evil.example" as another site
        path = "/runs"
    return f"{request.scope.get('root_path', '')}{path}"


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root


def _form_token(request: Request, nonce: str) -> str:
    key: bytes = request.state.csrf_key
    return hmac.new(key, f"login:{nonce}".encode(), hashlib.sha256).hexdigest()


def _form(request: Request, next_path: str, error: str = "", status_code: int = 200) -> Response:
    """The login form, with a fresh CSRF value (cookie and hidden field)."""
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {
            "base": _root(request),
            "next": next_path,
            "error": error,
            "csrf": _form_token(request, nonce),
        },
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_FORM_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_root(request) or "/",
    )
    return response


def _same_site(request: Request, sent: str) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    return bool(nonce) and hmac.compare_digest(sent, _form_token(request, nonce))


async def login(request: Request) -> Response:
    if request.method != "POST":
        next_path = request.query_params.get("next", "")
        if access.opens_without_login(request.app.state.settings, request.headers):
            return RedirectResponse(_next(request, next_path), 303)  # nothing to log in to
        return _form(request, next_path)
    access.check_origin(request)
    form = await request.form()
    next_path = str(form.get("next") or "")
    if not _same_site(request, str(form.get("csrf") or "")):
        return _form(
            request,
            next_path,
            "This login form is stale or was sent from another site: log in again here.",
            403,
        )
    token = str(form.get("token") or "").strip()
    who = await request.app.state.tokens.lookup(token) if token else None
    if who is None:  # the form again, with why (a page, not an error: a typo is no attack)
        return _form(
            request, next_path, "That token is not known here, has expired or was revoked."
        )
    response = RedirectResponse(_next(request, next_path), 303)
    response.set_cookie(
        access.COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_root(request) or "/",
    )
    response.delete_cookie(LOGIN_COOKIE, path=_root(request) or "/")
    return response


async def logout(request: Request) -> Response:
    # from this dashboard's pages only; no CSRF token, so a page left open across a restart of
    # the dashboard still logs out (logging out changes nothing but this browser's cookie)
    access.check_origin(request)
    root = _root(request)
    response = RedirectResponse(f"{root}/login", 303)
    response.delete_cookie(access.COOKIE, path=root or "/")
    return response


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
