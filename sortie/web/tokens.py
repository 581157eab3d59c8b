"""Dashboard tokens as the dashboard sees them (to be built: issue K, `sortie auth web-token`)."""

from __future__ import annotations

from sortie.client.client import Client
from sortie.web.access import Viewer


class TokenBook:
    """The tokens `sortie auth web-token` minted, looked up by hash."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def lookup(self, token: str) -> Viewer | None:
        return None
