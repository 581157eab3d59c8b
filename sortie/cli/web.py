"""`sortie web`: the dashboard alone, as a broker client, against any installation."""

from __future__ import annotations

import argparse
import asyncio
import signal

from sortie.web.settings import DEFAULT_PORT, WebSettings


def root_path(text: str) -> str:
    """``--root-path``: the path a reverse proxy serves the dashboard under (``/sortie``)."""
    path = "/" + text.strip().strip("/")
    if any(c in path for c in "?#\\ ") or "//" in path:
        raise argparse.ArgumentTypeError(f"--root-path takes a path like /sortie (got {text!r})")
    return "" if path == "/" else path


def port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (got {text!r})")
    return n


def add_web(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = sub.add_parser("web")
    web.add_argument("--host", default="127.0.0.1", help="where to listen (default 127.0.0.1)")
    web.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    web.add_argument(
        "--root-path",
        type=root_path,
        default="",
        metavar="PATH",
        help="behind a reverse proxy that serves it under PATH (e.g. /sortie)",
    )
    # `sortie up`'s own dashboard only: no login on loopback
    web.add_argument("--open-on-loopback", action="store_true", help=argparse.SUPPRESS)


def settings_of(args: argparse.Namespace) -> WebSettings:
    return WebSettings(
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        open_on_loopback=args.open_on_loopback,
        url=args.url,
        creds=args.creds,
        tls_ca=args.tls_ca,
    )


def run_web(args: argparse.Namespace) -> int:
    from sortie.web.server import serve

    settings = settings_of(args)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            shown = WebSettings(host=settings.host, port=bound, root_path=settings.root_path)
            login = "" if settings.open else " (log in with a token: `sortie auth web-token`)"
            print(f"dashboard: {shown.base_url()}{login}", flush=True)

        await serve(settings, stop, on_ready=ready)

    try:
        import uvloop

        uvloop.run(go())
    except ImportError:
        asyncio.run(go())
    return 0
