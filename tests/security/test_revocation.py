"""Credentials expire, renew and are revoked: the registry, the signer and a real nats-server
with authentication (the revoked holder's live connection is dropped, and it is refused)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from sortie.bus import expiry, identities
from sortie.bus.auth import (
    AuthError,
    Authority,
    Signer,
    init_authority,
    jwt_claims,
    load_creds,
    write_private,
)
from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import BusAuth, connect
from sortie.bus.errors import AccessDenied
from sortie.bus.revocation import push, revoke
from sortie.proto.permissions import Role
from tests.security.auth_fixtures import authority as authority  # the fixtures, shared
from tests.security.auth_fixtures import secure_broker as secure_broker


@pytest.mark.parametrize(
    ("now", "failed", "expected"),
    [
        (0, False, 20.0),  # a 30 s credential: renewed from 20 s on
        (25, False, 0.0),  # due: at once
        (20, True, 1.0),  # after a failure: a tenth of what is left, at least 1 s
        (-3570, True, 60.0),  # ... and at most a minute
    ],
)
def test_when_a_holder_renews(now: float, failed: bool, expected: float) -> None:
    assert expiry.wait_s(now, 0, 30, failed=failed) == pytest.approx(expected)


def test_due_and_lifetime() -> None:
    assert not expiry.due(19.9, 0, 30) and expiry.due(20, 0, 30)
    assert expiry.lifetime({"iat": 5, "exp": 35}) == (5, 35)
    assert expiry.lifetime({"iat": 5}) is None  # minted before credentials expired


def test_minted_credentials_expire_and_are_listed_without_secrets(authority: Authority) -> None:
    signer = Signer(authority.account, ttl_s=600, registry=authority.directory)
    creds = signer.mint(Role("agent", "box1"))
    claims = jwt_claims(creds.jwt)
    assert isinstance(claims["exp"], int) and claims["exp"] - time.time() == pytest.approx(600, 5)
    listed = {e.label: e for e in identities.load(authority.directory)}
    assert set(listed) == {"scheduler", "client", "agent.box1"}
    assert listed["agent.box1"].public_key == claims["sub"]
    text = (authority.directory / identities.REGISTRY_FILE).read_text()
    assert creds.jwt not in text and creds.seed not in text


def test_a_renewal_keeps_the_key_and_is_refused_once_revoked(authority: Authority) -> None:
    signer = authority.signer
    creds = signer.mint(Role("client"), label="alice")
    renewed = jwt_claims(signer.renew(creds.jwt))
    assert renewed["sub"] == jwt_claims(creds.jwt)["sub"] and renewed["name"] == "client"
    stranger = init_authority(authority.directory.parent / "other").signer
    with pytest.raises(AuthError, match="not signed by this authority"):
        signer.renew(stranger.mint(Role("client")).jwt)
    [gone] = identities.revoke(authority.directory, "alice", time.time())
    assert gone.public_key == renewed["sub"]
    with pytest.raises(AuthError, match="revoked"):
        signer.renew(creds.jwt)
    with pytest.raises(identities.UnknownIdentity, match="no credential named 'alice'"):
        identities.revoke(authority.directory, "alice", time.time())


async def test_a_revoked_agent_is_dropped_at_once_and_refused(
    secure_broker: BrokerProcess, authority: Authority, tmp_path: Path
) -> None:
    path = write_private(
        tmp_path / "box1.creds", authority.signer.mint(Role("agent", "box1")).text()
    )
    other = write_private(
        tmp_path / "box2.creds", authority.signer.mint(Role("agent", "box2")).text()
    )
    victim = await connect(secure_broker.url, "box1", auth=BusAuth(creds=path))
    bystander = await connect(secure_broker.url, "box2", auth=BusAuth(creds=other))

    revoke(authority, "box1")  # by agent id
    await push(authority, secure_broker.url, None)

    for _ in range(100):  # at most 10 s: the broker drops it, its reconnects are refused
        if victim.is_closed:
            break
        await asyncio.sleep(0.1)
    assert victim.is_closed and bystander.is_connected
    with pytest.raises(AccessDenied, match="was revoked"):
        await connect(secure_broker.url, "box1", auth=BusAuth(creds=path))
    await bystander.close()
    # a scheduler that never heard of the revocation renews the key: still refused, for good
    stale = Signer(authority.account, ttl_s=600)  # no registry, as on another host
    renewed = stale.renew(load_creds(other).jwt)  # (box2's, to show renewing works there)
    assert jwt_claims(renewed)["sub"] == jwt_claims(load_creds(other).jwt)["sub"]
    box1 = load_creds(path)
    await asyncio.sleep(1.1)  # a JWT issued in a later second than the revocation
    write_private(path, dataclasses.replace(box1, jwt=stale._sign(
        str(jwt_claims(box1.jwt)["sub"]), Role("agent", "box1"), "box1"
    )).text())  # fmt: skip
    with pytest.raises(AccessDenied, match="was revoked"):
        await connect(secure_broker.url, "box1", auth=BusAuth(creds=path))
    # a restarted broker reads broker.conf, which lists the revocation too
    assert identities.revocations(identities.load(authority.directory)).keys() == {
        jwt_claims(load_creds(path).jwt)["sub"]
    }
