"""Serving the dashboard with uvicorn on this process's event loop, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable

import uvicorn

from sortie.client.client import Client
from sortie.web.access import TokenLookup
from sortie.web.app import create_app
from sortie.web.settings import WebError, WebSettings


def bind(settings: WebSettings) -> socket.socket:
    """The listening socket, or ``WebError`` naming the port and what to do."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host.strip("[]"), settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise WebError(
                f"port {settings.port} on {settings.host} is taken: give the dashboard another "
                "one (--port N; for `sortie up`, --dashboard-port N, or 0 for none)"
            ) from None
        raise WebError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve(
    settings: WebSettings,
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    tokens: TokenLookup | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set. ``on_ready`` gets the port once it listens (the one
    given, or the one the system chose for port 0). The port is taken and the broker reached
    before anything is served, so either failing is said at once (``WebError``, or the
    client's ``BrokerUnreachable`` / ``AccessDenied``)."""
    sock = bind(settings)
    try:
        own = client is None
        client = client or await Client.connect(
            settings.url,
            name="sortie-web",
            creds=settings.creds,
            tls_ca=settings.tls_ca,
            stay_connected=True,  # a broker restart must not leave the dashboard dead
        )
    except BaseException:
        sock.close()
        raise
    try:
        await _serve_on(sock, settings, stop, client=client, tokens=tokens, on_ready=on_ready)
    finally:
        if own:
            await client.close()


async def _serve_on(
    sock: socket.socket,
    settings: WebSettings,
    stop: asyncio.Event,
    *,
    client: Client,
    tokens: TokenLookup | None,
    on_ready: Callable[[int], None] | None,
) -> None:
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, client=client, tokens=tokens),
        root_path=settings.root_path,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise WebError("the dashboard stopped while starting")
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready(port)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
