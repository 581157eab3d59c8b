"""Credentials expire, renew and are revoked, against a real `sortie up` (issue I, item 1).

`sortie up --creds-ttl 15` mints 15-second credentials: the local agent keeps heartbeating
and runs a run across several renewals (same key, later expiry, no restart), and so do the
scheduler and this user's client credentials. `sortie auth revoke` refuses a client's
credential at once (the CLI says so, no traceback) and an agent's: its connection is dropped,
its reconnects are refused, and the scheduler marks it lost and requeues its run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.auth import jwt_claims, load_creds
from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, connect
from sortie.bus.errors import AccessDenied
from tests.e2e.conftest import Installation, isolated_env, start_up, stop_up, wait_until

TTL_S = 15

TICKS = """\
import time
for i in range(60):  # 30 s: past two renewals of a 15 s credential
    print("tick", i, flush=True)
    time.sleep(0.5)
"""

LONG = """\
import time
print("started", flush=True)
for _ in range(1200):  # at most 120 s: it is fenced long before
    time.sleep(0.1)
"""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Installation]:
    port = free_port()
    env = isolated_env(tmp_path)
    log = tmp_path / "up.log"
    proc = start_up(tmp_path / "data", port, env, log, "--creds-ttl", str(TTL_S))
    try:
        yield Installation(
            url=f"nats://127.0.0.1:{port}",
            data_dir=(tmp_path / "data").resolve(),
            env=env,
            process=proc,
            log=log,
        )
    finally:
        stop_up(proc)


def submit(up: Installation, tmp_path: Path, script: str, *extra: str) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(script)
    done = up.cli(
        "run", "submit", str(src), "--script", "train.py", "--output", "json", *extra,
        check=True, timeout=180,
    )  # fmt: skip
    return str(json.loads(done.stdout.splitlines()[0])["run_id"])


def claims(path: Path) -> dict[str, object]:
    return jwt_claims(load_creds(path).jwt)


def test_credentials_renew_while_the_agent_runs_a_run(up: Installation, tmp_path: Path) -> None:
    files = {
        "agent": up.data_dir / "agent" / "agent.creds",
        "scheduler": up.scheduler_creds,
        "client": up.client_creds,
    }
    first = {name: claims(path) for name, path in files.items()}
    for c in first.values():
        assert c["exp"] == c["iat"] + TTL_S  # type: ignore[operator]
    run_id = submit(up, tmp_path, TICKS, "--wait")  # exits 0 only if Completed
    shown = up.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Completed" and shown["attempt"] == 1
    logs = up.cli("run", "logs", run_id, check=True).stdout
    assert all(f"tick {i}\n" in logs for i in range(60))
    for name, path in files.items():
        now = claims(path)
        assert now["sub"] == first[name]["sub"], name  # the same key: the seed never moved
        assert now["exp"] > first[name]["exp"] + TTL_S, name  # type: ignore[operator]  # renewed more than once
    agents = up.json("agent", "list")
    assert isinstance(agents, list) and [a["state"] for a in agents] == ["ready"]
    text = up.log.read_text()
    assert "credentials renewed" in text
    assert not any(load_creds(p).jwt in text or load_creds(p).seed in text for p in files.values())


def test_a_revoked_client_credential_is_refused_with_a_clear_error(
    up: Installation, tmp_path: Path
) -> None:
    alice = tmp_path / "alice.creds"
    made = up.cli(
        "auth", "creds", "--dir", str(up.data_dir / "auth"), "--role", "client", "--name",
        "alice", "--out", str(alice), check=True,
    )  # fmt: skip
    assert made.stdout.strip() == f"Wrote alice (client) credentials to {alice} (0600)"
    assert up.cli("--creds", str(alice), "run", "list").returncode == 0

    revoked = up.cli("auth", "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert "Revoked alice (1 credential)" in revoked.stdout
    refused = up.cli("--creds", str(alice), "run", "list")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"refused the credentials in {alice}: the credential was revoked" in refused.stderr
    assert up.cli("run", "list").returncode == 0  # the profile's client credentials still work

    unknown = up.cli("auth", "revoke", "nobody")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no credential named 'nobody'" in unknown.stderr
    listed = up.cli("auth", "list", check=True).stdout
    row = next(line for line in listed.splitlines() if line.startswith("alice "))
    assert row.split()[1] == "client" and row.split()[-1] == "revoked"
    assert load_creds(alice).jwt not in listed and load_creds(alice).seed not in listed


async def test_a_revoked_agent_is_dropped_refused_and_its_run_requeued(
    up: Installation, tmp_path: Path
) -> None:
    run_id = submit(up, tmp_path, LONG)
    wait_until(lambda: "started" in up.cli("run", "logs", run_id).stdout, timeout=60)
    agent_id = up.json("run", "show", run_id)["agent_id"]  # type: ignore[index]

    revoked = up.cli("auth", "revoke", agent_id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked agent.{agent_id}" in revoked.stdout
    # refused at once (before its short credentials would have expired anyway)
    with pytest.raises(AccessDenied, match="was revoked"):
        await connect(
            up.url, "revoked-agent", auth=BusAuth(creds=up.data_dir / "agent" / "agent.creds")
        )

    def lost() -> bool:
        agents = up.json("agent", "list")
        return isinstance(agents, list) and [a["state"] for a in agents] == ["lost"]

    wait_until(lost, timeout=60, interval=0.5)
    # its connection was dropped for good: it stopped its run itself when its lease lapsed
    text = up.log.read_text()
    assert '"error": "ConnectionClosedError()", "event": "heartbeat not sent"' in text
    assert "lease expired: no heartbeat confirmed; stopping every run" in text

    def requeued() -> dict[str, object] | None:
        shown = up.json("run", "show", run_id)
        return shown if isinstance(shown, dict) and shown["attempt"] == 2 else None  # type: ignore[return-value]

    shown = wait_until(requeued, timeout=90, interval=0.5)
    assert shown["state"] == "Queued"
