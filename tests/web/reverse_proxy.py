"""A real reverse proxy for tests: aiohttp, in a thread of its own, serving ``PREFIX/*`` from a
dashboard's root with the prefix stripped, as nginx does with

    location /sortie/ { proxy_pass http://127.0.0.1:PORT/; }

It passes its own ``Host`` upstream (nginx's default), adds ``X-Forwarded-Host``,
``X-Forwarded-Proto`` and ``X-Forwarded-For``, and streams every response body through as it
arrives (server-sent events included). Anything outside the prefix is a 404 of the proxy's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from sortie.bus.broker import free_port

# hop-by-hop headers (RFC 9110 7.6.1) and what aiohttp sets itself
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _kept(headers: object) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():  # type: ignore[attr-defined]
        if name.lower() not in _HOP:
            out.add(name, value)
    return out


def _app(upstream: str, prefix: str) -> web.Application:
    upstream_host = urlsplit(upstream).netloc
    session: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: web.Request) -> web.StreamResponse:
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(auto_decompress=False)
        target = upstream + "/" + request.match_info["tail"]
        if request.query_string:
            target += "?" + request.query_string
        headers = _kept(request.headers)
        headers["Host"] = upstream_host
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-For"] = request.remote or ""
        async with session["s"].request(
            request.method,
            target,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as up:
            response = web.StreamResponse(status=up.status, headers=_kept(up.headers))
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def close(_: web.Application) -> None:
        if "s" in session:
            await session["s"].close()

    app = web.Application()
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    return app


@contextmanager
def reverse_proxy(upstream: str, prefix: str) -> Iterator[str]:
    """Serve ``upstream`` (``http://127.0.0.1:PORT``) under ``prefix`` (``/sortie``) of a
    proxy on a free port; yields the proxy's base (``http://127.0.0.1:PROXY``)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(upstream.rstrip("/"), prefix))
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="reverse-proxy", daemon=True)
    thread.start()
    assert started.wait(20), "the reverse proxy did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
