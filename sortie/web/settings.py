"""How a dashboard is served: where it listens, under which path, and who may open it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8265


class WebError(RuntimeError):
    """The dashboard cannot be served (its port is taken, ...); the message says what to do."""


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1`` or ``localhost`` (what only this machine can reach)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # behind a reverse proxy that serves the dashboard under a path: "/sortie" ("": at the root)
    root_path: str = ""
    # `sortie up` on loopback: pages open without a login (anywhere else a token is needed)
    open_on_loopback: bool = False
    # the broker, as for the CLI (None: SORTIE_URL / SORTIE_CREDS / the `sortie up` profile)
    url: str | None = None
    creds: Path | None = None
    tls_ca: Path | None = None

    @property
    def open(self) -> bool:
        """Pages open without a login: only for `sortie up`, and only on loopback."""
        return self.open_on_loopback and is_loopback(self.host)

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.root_path}/"
