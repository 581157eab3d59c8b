"""The login form: a token in, an HttpOnly cookie out; and logging out."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sortie.web import access
from sortie.web.pages import templates


def _next(request: Request, raw: str) -> str:
    """Where to go after logging in: a path of this dashboard only (never another site)."""
    parts = urlsplit(raw)
    path = raw if raw.startswith("/") and not raw.startswith("//") and not parts.netloc else "/runs"
    return f"{request.scope.get('root_path', '')}{path}"


async def login(request: Request) -> Response:
    error = ""
    if request.method == "POST":
        form = await request.form()
        token = str(form.get("token") or "").strip()
        who = await request.app.state.tokens.lookup(token) if token else None
        if who is not None:
            response = RedirectResponse(_next(request, str(form.get("next") or "")), 303)
            response.set_cookie(
                access.COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path=request.scope.get("root_path", "") or "/",
            )
            return response
        error = "That token is not known here, has expired or was revoked."
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "base": request.scope.get("root_path", ""),
            "next": request.query_params.get("next", ""),
            "error": error,
        },
        status_code=401 if error else 200,
    )


async def logout(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/login", 303)
    response.delete_cookie(access.COOKIE, path=root or "/")
    return response


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
