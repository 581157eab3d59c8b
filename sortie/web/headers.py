"""Headers every response of the dashboard carries: what the browser may load and run.

Scripts come from the dashboard's own ``static/`` only (no inline script, no other origin),
so text a run wrote (a log line, a tag, a file of its snapshot) cannot run as script even if
something escaped it wrongly; no page may be framed by another site.
"""

from __future__ import annotations

from sortie.web.access import ASGIApp, Receive, Scope, Send

POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # style attributes in templates; no script
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:  # type: ignore[type-arg]  # ASGI message
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in HEADERS if k not in present),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)  # type: ignore[arg-type]  # ASGI send
