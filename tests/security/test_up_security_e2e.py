"""`sortie up` with authentication (the default) and with TLS, end to end through the CLI.

The installation runs with ``SORTIE_CREDS`` in its environment (as a user who exported it
would), so the tests also show that a run never inherits the broker credentials.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import pytest

from sortie.bus.auth import load_creds
from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, open_bus
from sortie.bus.kv import kv_items
from tests.e2e.conftest import (
    REPO,
    SORTIE,
    Installation,
    isolated_env,
    start_up,
    stop_up,
    wait_until,
)
from tests.security.certs import make_tls_files

SCRIPT = """\
import os
from sortie import Run
Run.get_context().log("loss", 0.25)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
print("creds in env:", os.environ.get("SORTIE_CREDS"))
print("done on", os.environ["SORTIE_TARGET"])
"""


class Recorded(Installation):
    """An installation that keeps everything its CLI printed (to look for secrets)."""

    outputs: list[str]

    def cli(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        proc = super().cli(*args, **kw)
        self.outputs += [proc.stdout, proc.stderr]
        return proc


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    root = tmp_path_factory.mktemp("secured")
    port = free_port()
    env = isolated_env(root)
    # as if the user had exported their client credentials: runs must not inherit them
    env["SORTIE_CREDS"] = str(root / "data" / "auth" / "client.creds")
    proc = start_up(root / "data", port, env, root / "up.log")
    inst = Recorded(
        url=f"nats://127.0.0.1:{port}",
        data_dir=(root / "data").resolve(),
        env=env,
        process=proc,
        log=root / "up.log",
    )
    inst.outputs = []
    try:
        yield inst
    finally:
        stop_up(proc)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(SCRIPT)
    return src


def test_up_writes_owner_only_credentials_named_by_the_profile(secured: Recorded) -> None:
    profile_path = Path(secured.env["SORTIE_PROFILE"])
    profile = json.loads(profile_path.read_text())
    assert profile["url"] == secured.url
    assert profile["creds"] == str(secured.client_creds)
    assert mode(profile_path) == 0o600
    assert mode(secured.data_dir / "auth") == 0o700
    for f in (secured.data_dir / "auth").iterdir():
        assert mode(f) == 0o600, f
    agent_creds = secured.data_dir / "agent" / "agent.creds"
    assert mode(agent_creds) == 0o600 and load_creds(agent_creds).name.startswith("agent.local-")


def test_a_client_without_or_with_foreign_credentials_is_refused(
    secured: Recorded, tmp_path: Path
) -> None:
    elsewhere = {"SORTIE_PROFILE": str(tmp_path / "none.json"), "SORTIE_CREDS": ""}
    anonymous = secured.cli("--url", secured.url, "run", "list", env=elsewhere)
    assert anonymous.returncode == 2 and "Traceback" not in anonymous.stderr
    assert anonymous.stderr.startswith(
        f"sortie: the Sortie broker at {secured.url} requires credentials: give a .creds file "
        "with --creds or SORTIE_CREDS"
    )
    given = secured.cli(
        "--url", secured.url, "--creds", str(secured.client_creds), "run", "list", env=elsewhere
    )
    assert given.returncode == 0, given.stderr
    other = secured.cli("auth", "init", str(tmp_path / "other"), check=True)
    assert "Authority in" in other.stdout
    foreign = tmp_path / "other" / "client.creds"
    refused = secured.cli("--url", secured.url, "--creds", str(foreign), "run", "list")
    assert refused.returncode == 2
    assert f"refused the credentials in {foreign}" in refused.stderr


def test_runs_and_cluster_nodes_work_with_their_own_credentials(
    secured: Recorded, tmp_path: Path
) -> None:
    src = source(tmp_path)
    local = secured.cli("run", "submit", str(src), "--script", "train.py", "--wait")
    assert local.returncode == 0, local.stderr
    assert "creds in env: None" in local.stdout and "done on local" in local.stdout
    secured.cli(
        "compute", "create", "sec-pool", "--vm-size", "local_small", "--max-nodes", "1",
        check=True,
    )  # fmt: skip
    done = secured.cli(
        "run", "submit", str(src), "--script", "train.py", "--target", "sec-pool", "--wait",
        "--output", "json", timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    shown = secured.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Completed"
    node = shown["agent_id"]
    assert node.startswith("sec-pool-")
    node_creds = secured.data_dir / "scheduler" / "providers" / "process" / "nodes" / node
    assert mode(node_creds / "agent.creds") == 0o600
    assert load_creds(node_creds / "agent.creds").name == f"agent.{node}"
    logs = secured.cli("run", "logs", run_id, check=True).stdout
    assert "creds in env: None" in logs and "done on sec-pool" in logs
    secured.cli("run", "download", run_id, str(tmp_path / "dl"), "--flat", check=True)
    assert (tmp_path / "dl" / "outputs" / "model.txt").read_text() == "weights"
    for args in (("run", "list"), ("compute", "show", "sec-pool"), ("agent", "list")):
        secured.json(*args)


def test_no_secret_appears_in_logs_records_or_cli_output(secured: Recorded) -> None:
    wait_until(lambda: secured.outputs, timeout=1)  # the tests above ran first
    secrets: set[str] = set()
    for nk in secured.data_dir.rglob("*.nk"):
        secrets.add(nk.read_text().strip())
    creds_files = list(secured.data_dir.rglob("*.creds"))
    assert len(creds_files) >= 4  # scheduler, client, the local agent, a cluster node
    for path in creds_files:
        creds = load_creds(path)
        secrets |= {creds.seed, creds.jwt, creds.jwt.split(".")[1]}

    texts = {f"cli output {i}": out for i, out in enumerate(secured.outputs)}
    logs = [secured.log, secured.data_dir / "nats" / "nats-server.log"]
    logs += list(secured.data_dir.rglob("*.log"))
    assert any(p.name.startswith("sec-pool-") for p in logs), "a node's log is looked at"
    for path in logs:
        texts[str(path)] = path.read_text(errors="replace")
    texts["stored records and streams"] = asyncio.run(stored(secured)).decode(errors="replace")
    assert "run_id" in texts["stored records and streams"]
    for where, text in texts.items():
        leaked = [s[:12] for s in secrets if s in text]
        assert not leaked, f"a secret ({leaked}...) appears in {where}"


async def stored(inst: Installation) -> bytes:
    """Every value of every bucket and every message of every stream, raw."""
    bus = await open_bus(inst.url, "test-dump", auth=BusAuth(creds=inst.scheduler_creds))
    try:
        out = b""
        for kv in (bus.runs, bus.agents, bus.computes, bus.nodes, bus.vms):
            out += b"".join(e.value or b"" for e in await kv_items(kv))
        for stream in ("SORTIE_LOGS", "SORTIE_METRICS", "SORTIE_REPORTS"):
            info = await bus.js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    out += (await bus.js.get_msg(stream, seq)).data or b""
                except nats.js.errors.NotFoundError:  # acked reports leave the work queue
                    continue
        return out
    finally:
        await bus.close()


def test_tls_with_a_given_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    env = isolated_env(tmp_path)
    port = free_port()
    data = tmp_path / "data"
    proc = start_up(
        data, port, env, tmp_path / "up.log",
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca),
    )  # fmt: skip
    url = f"tls://127.0.0.1:{port}"
    inst = Installation(url=url, data_dir=data, env=env, process=proc, log=tmp_path / "up.log")
    try:
        profile = json.loads(Path(env["SORTIE_PROFILE"]).read_text())
        assert (profile["url"], profile["tls_ca"]) == (url, str(tls.ca))
        src = source(tmp_path)
        done = inst.cli("run", "submit", str(src), "--script", "train.py", "--wait")
        assert done.returncode == 0 and "done on local" in done.stdout, done.stderr
        # a cluster node is handed the CA too
        inst.cli(
            "compute", "create", "tls-pool", "--vm-size", "local_small", "--max-nodes", "1",
            check=True,
        )  # fmt: skip
        node_run = inst.cli(
            "run", "submit", str(src), "--script", "train.py", "--target", "tls-pool", "--wait",
            timeout=180,
        )  # fmt: skip
        assert node_run.returncode == 0 and "done on tls-pool" in node_run.stdout, node_run.stderr

        elsewhere = {"SORTIE_PROFILE": str(tmp_path / "none.json")}
        creds = str(data / "auth" / "client.creds")
        untrusted = inst.cli("--url", url, "--creds", creds, "run", "list", env=elsewhere)
        assert untrusted.returncode == 2 and "Traceback" not in untrusted.stderr
        assert f"TLS with the Sortie broker at {url} failed" in untrusted.stderr
        assert "--tls-ca" in untrusted.stderr
        other_ca = make_tls_files(tmp_path / "other", ca_name="Someone else")
        wrong = inst.cli(
            "--url", url, "--creds", creds, "--tls-ca", str(other_ca.ca), "run", "list",
            env=elsewhere,
        )  # fmt: skip
        assert wrong.returncode == 2 and f"not trusted by the CA in {other_ca.ca}" in wrong.stderr
        trusted = inst.cli(
            "--url", url, "--creds", creds, "--tls-ca", str(tls.ca), "run", "list",
            env=elsewhere,
        )  # fmt: skip
        assert trusted.returncode == 0, trusted.stderr
    finally:
        stop_up(proc)


def test_up_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    half = subprocess.run(
        [*SORTIE, "up", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(tls.cert)],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert half.returncode == 2 and "Traceback" not in half.stderr
    assert "TLS needs both --tls-cert and --tls-key (PEM files)" in half.stderr
