"""Client processes import nats-py and structlog without what only some of them use.

nats-py imports aiohttp at its own import (about 0.25 s) for one thing: connecting over
websockets (``ws://``, ``wss://``). structlog imports rich (about 0.15 s) for its console's
tracebacks, and greenlet for a thread-local store no client uses. A CLI client command needs
none of them, so :func:`import_for_client` imports nats-py and structlog with those hidden;
:func:`enable_websocket` hands nats-py aiohttp when a websocket URL is used after all
(``connection.connect`` calls it), so ws:// URLs work whichever way nats-py was imported.
Daemons import as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

WEBSOCKET_SCHEMES = ("ws://", "wss://")


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Imports inside see ``names`` as not installed (``import`` raises ImportError, as the
    libraries' optional imports expect); names already imported are left as they are."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not here"
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_for_client() -> None:
    """Import nats-py without aiohttp and structlog without rich (plain tracebacks in a
    client's log lines) or greenlet. Does nothing to a library already imported."""
    with without("aiohttp", "rich", "greenlet"):
        import nats  # noqa: F401
        import structlog  # noqa: F401


def is_websocket(url: str) -> bool:
    """Whether any of ``url``'s comma-separated servers is a websocket URL."""
    return any(u.strip().lower().startswith(WEBSOCKET_SCHEMES) for u in url.split(","))


def enable_websocket() -> None:
    """Give nats-py its websocket transport if it was imported without aiohttp."""
    from nats.aio import transport

    found = vars(transport)  # its module globals: `aiohttp = None` where the import failed
    if found.get("aiohttp") is None:
        import aiohttp
        import multidict

        found.update(aiohttp=aiohttp, multidict=multidict)
