"""Serving a Prometheus registry over HTTP from the daemon's own event loop.

The scheduler's gauges are computed from its in-memory state when scraped
(``scheduler.metrics``). Serving them from the event loop that owns that state, rather than
from prometheus_client's server thread, means a scrape never reads the state while the loop
changes it. ``/metrics`` speaks the Prometheus text format, or OpenMetrics when the scraper
asks for it; ``/healthz`` answers ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when serving: the CLI imports this module for its error only
    from aiohttp import web
    from prometheus_client import CollectorRegistry


class MetricsPortError(RuntimeError):
    """The metrics endpoint could not listen; the message says where and what to do."""


@dataclass
class MetricsServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Listen on ``host:port`` (port 0: any free port) until :meth:`MetricsServer.close`."""
    from aiohttp import web
    from prometheus_client.exposition import choose_encoder

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="Sortie metrics: /metrics\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsPortError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
            "--metrics-port (or stop what listens there)"
        ) from None
    addresses = runner.addresses  # the bound (host, port, ...) of each listening socket
    bound = int(addresses[0][1]) if addresses else port
    return MetricsServer(runner=runner, host=host, port=bound)
