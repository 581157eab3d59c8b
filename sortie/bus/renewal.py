"""Keeping a live connection's credentials valid: renewed before they expire, no restart.

A holder (agent, scheduler) runs :func:`keep_renewed` beside its connection. When its JWT is
due (``expiry``), it asks for a fresh one for the same user key (an agent asks the scheduler,
:func:`from_scheduler`; the scheduler signs its own), rewrites its ``.creds`` file atomically
and reconnects at once (``force_reconnect``): nats-py then calls ``user_jwt_cb``, which reads
the new file (``auth.connect_callbacks``). The broker checks a JWT only when a connection is
made, and closes one whose JWT expires (nats-py would then not reconnect), so the reconnect
happens now, while both are valid; subscriptions are restored and pending publishes are sent
after it, as after any broker hiccup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from sortie.bus import expiry
from sortie.bus.auth import AuthError, Signer, jwt_claims, load_creds, write_private
from sortie.proto import codec, subjects
from sortie.proto import messages as m

RECONNECT_WAIT_S = 5.0
RENEW_TIMEOUT_S = 2.0  # short: a lost request (the scheduler reconnecting) is retried soon

# the current JWT -> a fresh JWT for the same key; AuthError when refused
Renew = Callable[[str], Awaitable[str]]

log = structlog.get_logger("sortie.bus")


def from_scheduler(nc: NATS) -> Renew:
    """Ask the scheduler (``subjects.AUTH_RENEW``)."""

    async def renew(token: str) -> str:
        data = codec.encode(m.RenewRequest(jwt=token))
        msg = await nc.request(subjects.AUTH_RENEW, data, timeout=RENEW_TIMEOUT_S)
        try:
            reply: m.RenewReply | m.ErrorReply = codec.decode(m.RenewReplyOrError, msg.data)
        except codec.BadMessage as exc:
            raise AuthError(f"the scheduler's answer could not be read ({exc})") from None
        if isinstance(reply, m.ErrorReply):
            raise AuthError(reply.message)
        return reply.jwt

    return renew


def by_signer(signer: Signer) -> Renew:
    """Sign it here (the scheduler, which holds the account key)."""

    async def renew(token: str) -> str:
        return signer.renew(token)

    return renew


async def keep_renewed(nc: NATS, path: Path, renew: Renew) -> None:
    """Keep the connection ``nc`` (made with the credentials in ``path``) on valid credentials
    until cancelled (or until they expired unrenewed, or if they never expire).

    When the JWT the connection presented is due, it takes the file's if another holder of the
    same file renewed it already (``sortie up`` renews its client credentials, and so does
    every client using them), else asks ``renew`` and rewrites the file; then reconnects."""
    try:
        in_use = load_creds(path).jwt
    except AuthError as exc:
        log.error("credentials will not be renewed", error=str(exc))
        return
    failed = False
    while (life := expiry.lifetime(jwt_claims(in_use))) is not None:
        if life[1] <= time.time():
            log.error("credentials expired unrenewed", path=str(path))
            return
        await asyncio.sleep(expiry.wait_s(time.time(), *life, failed=failed))
        try:
            in_use = await _fresh(path, in_use, renew)
        except OSError as exc:  # the file cannot be rewritten (a read-only mount)
            failed = True
            log.error("renewed credentials not written", path=str(path), error=exc.strerror)
            continue
        except (AuthError, nats.errors.Error, TimeoutError) as exc:
            failed = True
            log.warning("credentials not renewed yet", error=str(exc) or type(exc).__name__)
            continue
        failed = False
        await nc.force_reconnect()


async def renew_if_due(nc: NATS, path: Path, renew: Renew) -> None:
    """Before a client's first request: if the credentials it connected with are due, renew
    them and reconnect now, while no request is in flight (a reconnect loses the replies of
    requests in flight). A refusal is left to :func:`keep_renewed` to retry."""
    try:
        in_use = load_creds(path).jwt
    except AuthError:
        return
    life = expiry.lifetime(jwt_claims(in_use))
    if life is None or not expiry.due(time.time(), *life):
        return
    try:
        await _fresh(path, in_use, renew)
    except (AuthError, OSError, nats.errors.Error, TimeoutError) as exc:
        log.warning("credentials not renewed yet", error=str(exc) or type(exc).__name__)
        return
    await nc.force_reconnect()
    for _ in range(int(RECONNECT_WAIT_S / 0.05)):
        if nc.is_connected:
            return
        await asyncio.sleep(0.05)


async def _fresh(path: Path, in_use: str, renew: Renew) -> str:
    """A JWT that outlives ``in_use``: the file's if it already does, else a renewed one."""
    creds = load_creds(path)
    if _expires(creds.jwt) > _expires(in_use):
        return creds.jwt
    token = await renew(creds.jwt)
    write_private(path, dataclasses.replace(creds, jwt=token).text())
    log.info("credentials renewed", path=str(path), expires_at=_expires(token))
    return token


def _expires(token: str) -> int:
    life = expiry.lifetime(jwt_claims(token))
    return life[1] if life is not None else 0
