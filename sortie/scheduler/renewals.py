"""The scheduler's side of credential renewal (shell): it answers ``subjects.AUTH_RENEW`` with
a fresh JWT for the asker's own user key (``auth.Signer.renew``: signed by this account, not
expired, listed in the registry, not revoked), and keeps its own credentials renewed.

Nothing here logs a JWT: a refusal is logged with its reason only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sortie.bus.auth import AuthError, Signer, jwt_claims
from sortie.bus.renewal import by_signer, from_scheduler, keep_renewed
from sortie.proto import codec, subjects
from sortie.proto import messages as m

log = structlog.get_logger("sortie.scheduler")


def answer(signer: Signer, data: bytes) -> m.RenewReply | m.ErrorReply:
    """The reply to one renewal request's bytes."""
    try:
        request = codec.decode(m.RenewRequest, data)
    except codec.BadMessage as exc:
        return m.ErrorReply(code="bad_request", message=str(exc))
    try:
        token = signer.renew(request.jwt)
    except AuthError as exc:
        return m.ErrorReply(code="invalid_state", message=str(exc))
    expires = jwt_claims(token).get("exp")
    return m.RenewReply(jwt=token, expires_at=expires if isinstance(expires, int) else 0)


async def serve(nc: NATS, signer: Signer) -> Subscription:
    async def on_request(msg: Msg) -> None:
        reply = answer(signer, msg.data)
        if isinstance(reply, m.ErrorReply):
            log.warning("credential renewal refused", reason=reply.message)
        if msg.reply:
            await msg.respond(codec.encode(reply))

    return await nc.subscribe(subjects.AUTH_RENEW, queue=subjects.SCHEDULER_QUEUE, cb=on_request)


def keep_own(nc: NATS, signer: Signer | None, creds: Path) -> asyncio.Task[None]:
    """The scheduler's own credentials, renewed with its own account key; without one (no
    ``--account-key``), by a scheduler that has it, like an agent's."""
    renew = by_signer(signer) if signer is not None else from_scheduler(nc)
    return asyncio.create_task(keep_renewed(nc, creds, renew))
