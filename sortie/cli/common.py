"""What several commands share: the usage error, KEY=VALUE flags, a connected client.

Light on purpose (argparse and the standard library): every command's module imports it, and
a command loads only its own module's imports (``cli/commands.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sortie.client.client import Client


class UsageError(Exception):
    """The command line asks for something that cannot be done; the message says why."""


def env_vars(pairs: list[str], flag: str = "--env") -> dict[str, str]:
    """``KEY=VALUE`` flags (``--env``, ``--label``, ``--tag``...) as a mapping."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def with_client(args: argparse.Namespace, fn: Callable[[Client], Awaitable[int]]) -> int:
    """Connect (``--url``, ``--creds``, ``--tls-ca`` or the profile), run ``fn``, close."""
    import asyncio

    from sortie.client.client import Client

    async def go() -> int:
        client = await Client.connect(args.url, creds=args.creds, tls_ca=args.tls_ca)
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(go())
