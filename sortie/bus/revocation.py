"""Refusing a credential at once: ``sortie auth revoke``.

The registry marks the credential's user key revoked (``identities.revoke``); the account JWT
then lists it (``revocations``). ``broker.conf`` is rewritten, so a restarted broker refuses it
too, and the running broker is handed the new account JWT over its system account
(``$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE``, which nats-server accepts with the ``MEMORY``
resolver Sortie configures): it closes the revoked key's connections and refuses its
reconnects. The system user is minted in memory for this one request and lives five minutes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.errors

from sortie.bus import identities
from sortie.bus.auth import Authority, write_private
from sortie.bus.connection import BusAuth, connect
from sortie.bus.errors import BrokerUnreachable
from sortie.proto import subjects

PUSH_TIMEOUT_S = 5.0
JWT_UPDATED = 200  # nats-server's code for an accepted account JWT


class PushFailed(RuntimeError):
    """The broker could not be told; the message says why (the revocation is recorded)."""


def revoke(authority: Authority, who: str) -> list[identities.Identity]:
    """Mark ``who``'s live credentials revoked and rewrite ``broker.conf``; the entries.
    ``identities.UnknownIdentity`` when there is none of that name."""
    revoked = identities.revoke(authority.directory, who, time.time())
    write_private(authority.broker_conf, authority.server_config())
    return revoked


async def push(authority: Authority, url: str, tls_ca: Path | None) -> None:
    """Hand the running broker at ``url`` the account JWT with every revocation."""
    # the system user's creds exist on disk (owner-only, in the authority's own directory)
    # only while connecting: connect() reads credentials from a file
    path = authority.directory / f".system.{os.getpid()}.creds"
    write_private(path, authority.system_creds().text())
    try:
        nc = await connect(url, "sortie-auth-revoke", auth=BusAuth(creds=path, tls_ca=tls_ca))
    except BrokerUnreachable as exc:
        raise PushFailed(str(exc)) from None
    finally:
        path.unlink(missing_ok=True)
    try:
        subject = subjects.account_claims_update(authority.account.public_key)
        reply = await nc.request(subject, authority.account_jwt().encode(), PUSH_TIMEOUT_S)
    except nats.errors.Error as exc:
        raise PushFailed(f"the broker at {url} did not answer ({exc})") from None
    finally:
        await nc.close()
    try:
        answer = msgspec.json.decode(reply.data, type=_ServerReply)
    except msgspec.DecodeError:
        answer = _ServerReply(error={"description": "an answer that is not nats-server's"})
    if (answer.data or {}).get("code") != JWT_UPDATED:
        why = (answer.error or {}).get("description", "no reason given")
        raise PushFailed(f"the broker at {url} refused the update ({why})")


@dataclass(frozen=True)
class _ServerReply:
    """nats-server's answer to a claims update (its own format, not Sortie's)."""

    data: dict[str, object] | None = None
    error: dict[str, object] | None = None
