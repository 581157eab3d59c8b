"""Credentials: who is let in, what a person is told when not, and the files that hold them."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from sortie.bus.auth import (
    AuthError,
    Authority,
    init_authority,
    jwt_claims,
    load_creds,
    write_private,
)
from sortie.bus.broker import BrokerProcess, free_port
from sortie.bus.connection import BusAuth, connect, open_bus
from sortie.bus.errors import AccessDenied
from sortie.proto.permissions import Role
from tests.e2e.conftest import REPO, SORTIE
from tests.security.auth_fixtures import authority as authority  # the fixtures, shared
from tests.security.auth_fixtures import secure_broker as secure_broker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_connection_without_credentials_is_refused_and_told_what_to_give(
    secure_broker: BrokerProcess,
) -> None:
    with pytest.raises(AccessDenied) as err:
        await connect(secure_broker.url, "anonymous")
    message = str(err.value)
    assert f"the Sortie broker at {secure_broker.url} requires credentials" in message
    assert "--creds" in message and "SORTIE_CREDS" in message


async def test_credentials_from_another_authority_are_refused_even_for_a_daemon(
    secure_broker: BrokerProcess, tmp_path: Path
) -> None:
    stranger = init_authority(tmp_path / "other")
    with pytest.raises(AccessDenied) as err:
        await connect(secure_broker.url, "c", auth=BusAuth(creds=stranger.client_creds))
    assert f"refused the credentials in {stranger.client_creds}" in str(err.value)
    # a daemon retries an unreachable broker forever, but not a refusal: it stops and says so
    with pytest.raises(AccessDenied):
        await open_bus(
            secure_broker.url,
            "agent",
            reconnect_forever=True,
            auth=BusAuth(creds=stranger.scheduler_creds),
        )


async def test_unusable_credentials_files_are_named_with_what_to_do(
    secure_broker: BrokerProcess, tmp_path: Path, authority: Authority
) -> None:
    missing = tmp_path / "nope.creds"
    with pytest.raises(AuthError, match=re.escape(f"cannot read the credentials file {missing}")):
        await connect(secure_broker.url, "c", auth=BusAuth(creds=missing))
    garbage = write_private(tmp_path / "garbage.creds", "hello\n")
    with pytest.raises(AuthError, match="is not a NATS credentials file"):
        await connect(secure_broker.url, "c", auth=BusAuth(creds=garbage))
    # a JWT with someone else's seed
    theirs = load_creds(authority.client_creds)
    other = authority.signer.mint(Role("client"))
    mixed = write_private(tmp_path / "mixed.creds", theirs.text().replace(theirs.seed, other.seed))
    with pytest.raises(AuthError, match="its seed does not match its JWT"):
        await connect(secure_broker.url, "c", auth=BusAuth(creds=mixed))


def test_an_authority_is_made_once_owner_only_and_kept(tmp_path: Path) -> None:
    first = init_authority(tmp_path / "auth")
    client_text = first.client_creds.read_text()
    again = init_authority(tmp_path / "auth")
    assert again.account.public_key == first.account.public_key
    assert again.client_creds.read_text() == client_text, "issued credentials stay valid"
    assert mode(tmp_path / "auth") == 0o700
    for f in (tmp_path / "auth").iterdir():
        assert mode(f) == 0o600, f
    # nothing secret in a repr (log lines and tracebacks show reprs)
    creds = load_creds(first.client_creds)
    for shown in (repr(first), repr(creds), repr(first.signer)):
        assert creds.seed not in shown and creds.jwt not in shown
        assert first.account.seed not in shown and "raw_seed" not in shown
    assert repr(creds) == "Creds(name='client')"


def test_agent_roles_need_a_valid_agent_id() -> None:
    with pytest.raises(ValueError, match="needs an agent id"):
        Role("agent")
    with pytest.raises(ValueError, match=re.escape("agent id 'a.b' is not valid")):
        Role("agent", "a.b")
    assert Role("agent", "gpu-1").identity == "agent.gpu-1"


def sortie(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SORTIE, *args], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )


def test_auth_cli_writes_files_and_prints_no_secret(tmp_path: Path) -> None:
    made = sortie("auth", "init", str(tmp_path / "auth"))
    assert made.returncode == 0, made.stderr
    assert "--account-key" in made.stdout and "broker.conf" in made.stdout
    out = tmp_path / "node7.creds"
    agent = sortie(
        "auth",
        "creds",
        "--dir",
        str(tmp_path / "auth"),
        "--role",
        "agent",
        "--agent-id",
        "node7",
        "--out",
        str(out),
    )
    assert agent.returncode == 0, agent.stderr
    assert agent.stdout.strip() == f"Wrote agent.node7 credentials to {out} (0600)"
    assert mode(out) == 0o600 and load_creds(out).name == "agent.node7"
    secrets = [load_creds(out).seed, load_creds(out).jwt]
    secrets += [p.read_text().strip() for p in (tmp_path / "auth").glob("*.nk")]
    for p in (tmp_path / "auth").glob("*.creds"):
        secrets += [load_creds(p).seed, load_creds(p).jwt]
    for shown in (made.stdout, made.stderr, agent.stdout, agent.stderr):
        assert not any(s in shown for s in secrets)

    no_id = sortie(
        "auth", "creds", "--dir", str(tmp_path / "auth"), "--role", "agent", "--out", str(out)
    )
    assert no_id.returncode == 2
    assert "--agent-id goes with --role agent" in no_id.stderr
    no_dir = sortie(
        "auth", "creds", "--dir", str(tmp_path / "x"), "--role", "client", "--out", str(out)
    )
    assert no_dir.returncode == 2 and "Traceback" not in no_dir.stderr
    assert f"cannot read the account key {tmp_path / 'x' / 'account.nk'}" in no_dir.stderr


def test_auth_list_and_revoke_without_a_reachable_broker(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    init = sortie("auth", "init", str(auth), "--output", "json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["client_creds"] == str((auth / "client.creds").resolve())
    made = sortie(
        "auth", "creds", "--dir", str(auth), "--role", "agent", "--agent-id", "box1",
        "--out", str(tmp_path / "box1.creds"), "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {
        "name": "agent.box1",
        "identity": "agent.box1",
        "file": str(tmp_path / "box1.creds"),
    }
    listed = sortie("auth", "list", "--dir", str(auth))
    assert listed.returncode == 0
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"agent.box1", "client", "scheduler"}
    assert all(r[-1] == "valid" for r in rows.values())
    assert load_creds(tmp_path / "box1.creds").jwt not in listed.stdout

    port = free_port()  # nothing listens there
    revoked = sortie(
        "--url", f"nats://127.0.0.1:{port}", "auth", "revoke", "box1", "--dir", str(auth)
    )
    assert revoked.returncode == 2 and "Traceback" not in revoked.stderr
    assert "Revoked agent.box1 (1 credential)" in revoked.stdout
    assert f"cannot reach the Sortie broker at nats://127.0.0.1:{port}" in revoked.stderr
    assert "The revocation is recorded in" in revoked.stderr
    rows = {
        line.split()[0]: line.split()
        for line in sortie("auth", "list", "--dir", str(auth)).stdout.splitlines()[1:]
    }
    assert rows["agent.box1"][-1] == "revoked" and rows["client"][-1] == "valid"
    as_json = json.loads(sortie("auth", "list", "--dir", str(auth), "-o", "json").stdout)
    states = {c["name"]: (c["state"], c["revoked_at"]) for c in as_json}
    assert states["client"] == ("valid", None)
    assert states["agent.box1"][0] == "revoked" and states["agent.box1"][1].endswith("Z")
    # the account JWT in broker.conf lists it: a restarted broker refuses it
    preloaded = re.findall(r'^  A\w+: "([^"]+)"$', (auth / "broker.conf").read_text(), re.M)
    revoked_keys = [jwt_claims(j)["nats"].get("revocations") for j in preloaded]  # type: ignore[attr-defined]
    sub = jwt_claims(load_creds(tmp_path / "box1.creds").jwt)["sub"]
    assert any(isinstance(r, dict) and sub in r for r in revoked_keys)

    again = sortie("auth", "revoke", "box1", "--dir", str(auth))
    assert again.returncode == 2 and "no credential named 'box1'" in again.stderr
    nowhere = sortie("auth", "list", "--dir", str(tmp_path / "none"))
    assert nowhere.returncode == 2 and "no authority in" in nowhere.stderr
    nowhere = sortie("auth", "list", "--dir", str(tmp_path / "none"), "--output", "json")
    assert nowhere.returncode == 2 and json.loads(nowhere.stderr)["code"] == "bad_input"
