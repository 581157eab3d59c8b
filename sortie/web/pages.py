"""Rendering a page: the one Jinja2 environment, its filters, and what every page is given."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from sortie.web import access

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))  # autoescapes .html


def iso(t: float | None) -> str:
    """Epoch seconds as ``2026-12-02 13:25:09Z``; "" for none."""
    if not t:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``, ``3d 4h``; "" for none."""
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return ""
    return duration((time.time() if now is None else now) - t) + " ago"


def number(value: object) -> str:
    """Floats to 6 significant digits, as the CLI shows them."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


templates.env.filters.update(iso=iso, duration=duration, ago=ago, number=number)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with the page's context: the base path (behind a proxy), the viewer, the
    CSRF token, and the views for the navigation bar."""
    from sortie.web.views import NAV  # the registry imports every view module, which import this

    who = access.viewer(request)
    context.update(
        base=request.scope.get("root_path", ""),
        viewer=who,
        csrf=access.csrf_token(request),
        nav=NAV,
        now=time.time(),
    )
    context.setdefault("active", template.removesuffix(".html"))
    response: HTMLResponse = templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    return response
