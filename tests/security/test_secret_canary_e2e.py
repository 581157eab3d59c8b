"""A canary secret through a real `sortie up`: the run gets it, nothing else ever holds it.

The installation logs at debug level (everything the scheduler and the agent say goes to
its log file). A run submitted with the canary as a secret variable, through the CLI and
through the SDK, checks it received the value (by its sha256, passed as an argument). Then
the canary must appear in no CLI output (text or JSON), in no raw value of any KV bucket,
and in no file anywhere under the installation: daemon logs, the broker's JetStream store
(records, reports, run logs), the agent's run directories. The scheduler's own copy lives
only while the run does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, open_bus
from sortie.bus.kv import kv_items
from tests.e2e.conftest import REPO, SORTIE, Installation, isolated_env, stop_up, wait_until

CANARY = f"canary-{secrets.token_hex(16)}"
DIGEST = hashlib.sha256(CANARY.encode()).hexdigest()
SCRIPT = """\
import hashlib, os, sys
value = os.environ.get("CANARY_TOKEN", "")
ok = hashlib.sha256(value.encode()).hexdigest() == sys.argv[1]
os.makedirs("outputs", exist_ok=True)
open("outputs/check.txt", "w").write("ok" if ok else "mismatch")
print("secret received:", "yes" if ok else "no")
sys.exit(0 if ok else 3)
"""


@pytest.fixture(scope="module")
def canary_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """`sortie --log-level debug up`: the daemons' every log line lands in ``up.log``."""
    root = tmp_path_factory.mktemp("canary")
    port = free_port()
    env = isolated_env(root, "CANARY_TOKEN")
    log = root / "up.log"
    data_dir = root / "data"
    with open(log, "a") as fh:
        proc = subprocess.Popen(
            [
                *SORTIE,
                *("--log-level", "debug", "up", "--data-dir", str(data_dir)),
                *("--port", str(port), "--no-fsync"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            cwd=REPO,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("Sortie ready at "):
        proc.kill()
        raise AssertionError(f"sortie up did not get ready: {line!r}\n{log.read_text()[-3000:]}")
    url = line.split()[3]
    inst = Installation(url=url, data_dir=data_dir, env=env, process=proc, log=log)
    try:
        yield inst
    finally:
        stop_up(proc)


def raw_store(inst: Installation) -> bytes:
    """Every value of every KV bucket, raw, read with full rights."""

    async def dump() -> bytes:
        bus = await open_bus(inst.url, "canary-dump", auth=BusAuth(creds=inst.scheduler_creds))
        try:
            out = b""
            for kv in (bus.runs, bus.agents, bus.computes, bus.nodes, bus.vms):
                out += b"".join(e.value or b"" for e in await kv_items(kv))
            return out
        finally:
            await bus.close()

    return asyncio.run(dump())


def files_holding(root: Path, needle: bytes) -> list[str]:
    hits = []
    for d, _, names in os.walk(root):
        for name in names:
            path = Path(d) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                if needle in path.read_bytes():
                    hits.append(str(path.relative_to(root)))
            except OSError:
                continue
    return hits


def test_a_canary_secret_reaches_the_run_and_nothing_else(
    canary_up: Installation,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inst = canary_up
    src = tmp_path / "src"
    src.mkdir()
    (src / "check.py").write_text(SCRIPT)
    printed: list[str] = []

    def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        proc = inst.cli(*args, **kw)
        printed.extend([proc.stdout, proc.stderr])
        return proc

    # the CLI: the value comes from the submitter's environment, named by --secret-env
    proc = cli(
        "run", "submit", str(src), "--script", "check.py", "--experiment", "canary",
        "--secret-env", "CANARY_TOKEN", "--arg", DIGEST, "--wait", "--output", "json",
        env={"CANARY_TOKEN": CANARY},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cli_run = json.loads(proc.stdout.strip().splitlines()[0])["run_id"]

    # the SDK
    from sortie import Experiment, RunConfiguration, ScriptRunConfig, Workspace

    monkeypatch.setenv("SORTIE_PROFILE", inst.env["SORTIE_PROFILE"])
    with Workspace.connect() as ws:
        rc = RunConfiguration(secret_environment_variables={"CANARY_TOKEN": CANARY})
        config = ScriptRunConfig(
            source_directory=src, script="check.py", arguments=[DIGEST], run_config=rc
        )
        run = Experiment(ws, "canary").submit(config)
        run.wait_for_completion(show_output=True)
        assert run.get_status() == "Completed"
        details = json.dumps(run.get_details())
        printed.append(details + repr(rc) + repr(config) + repr(run))
    sdk_run = run.id
    out = capsys.readouterr()
    printed.extend([out.out, out.err])
    assert "secret received: yes" in out.out

    for run_id in (cli_run, sdk_run):
        shown = json.loads(cli("run", "show", run_id, "--output", "json", check=True).stdout)
        assert shown["state"] == "Completed" and shown["secret_env"] == ["CANARY_TOKEN"]
        cli("run", "show", run_id, check=True)
        logs = cli("run", "logs", run_id, check=True).stdout
        assert "secret received: yes" in logs
        cli("run", "wait", run_id, check=True)
        cli("run", "why", run_id)
        cli("run", "why", run_id, "--output", "json")
        dest = tmp_path / f"out-{run_id}"
        cli("run", "download", run_id, str(dest), "--flat", check=True)
        assert (dest / "outputs" / "check.txt").read_text() == "ok"
    for listing in (
        ("run", "list"),
        ("run", "list", "--output", "json"),
        ("status",),
        ("status", "--output", "json"),
        ("agent", "list", "--output", "json"),
        ("compute", "list", "--output", "json"),
    ):
        cli(*listing, check=True)

    # the scheduler's copy goes with the run
    kept = inst.data_dir / "scheduler" / "run-secrets"
    wait_until(lambda: not any(kept.glob("*.json")), timeout=20)

    assert all(CANARY not in text for text in printed), "the canary was printed"
    assert CANARY.encode() not in raw_store(inst), "the canary is in the KV store"
    assert b"CANARY_TOKEN" in raw_store(inst)  # the name is recorded, for `run show`
    log = inst.log.read_text()
    assert "run queued" in log and "attempt assigned" in log  # both daemons' logs are here
    root = inst.data_dir.parent
    assert files_holding(root, CANARY.encode()) == [], "the canary is in a file"
    assert files_holding(root, DIGEST.encode()) != []  # the scan does read what is there
