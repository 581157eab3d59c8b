"""The scheduler's answer to a renewal request, by table: a fresh JWT for the asker's own key,
or an error saying why not (no JWT in it)."""

from __future__ import annotations

import time
from pathlib import Path

from sortie.bus import identities
from sortie.bus.auth import init_authority, jwt_claims
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.permissions import Role
from sortie.scheduler.renewals import answer


def test_renewal_answers(tmp_path: Path) -> None:
    authority = init_authority(tmp_path / "auth", ttl_s=60)
    signer = authority.signer
    agent = signer.mint(Role("agent", "box1"))
    other = init_authority(tmp_path / "other").signer.mint(Role("client"))

    ok = answer(signer, codec.encode(m.RenewRequest(jwt=agent.jwt)))
    assert isinstance(ok, m.RenewReply)
    fresh = jwt_claims(ok.jwt)
    assert fresh["sub"] == jwt_claims(agent.jwt)["sub"] and fresh["name"] == "agent.box1"
    assert fresh["exp"] == ok.expires_at and "RenewReply(jwt=<redacted>" in repr(ok)

    bad = answer(signer, b'{"type": "renew"}')
    assert isinstance(bad, m.ErrorReply) and bad.code == "bad_request"
    foreign = answer(signer, codec.encode(m.RenewRequest(jwt=other.jwt)))
    assert isinstance(foreign, m.ErrorReply) and "not signed by this authority" in foreign.message
    identities.revoke(authority.directory, "box1", time.time())
    revoked = answer(signer, codec.encode(m.RenewRequest(jwt=agent.jwt)))
    assert isinstance(revoked, m.ErrorReply) and revoked.code == "invalid_state"
    assert "revoked" in revoked.message and agent.jwt not in revoked.message
