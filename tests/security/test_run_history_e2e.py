"""An agent writes only into its own runs (issue I, item 4), against a real `sortie up`.

An agent's credentials (minted from the installation's account key, as the scheduler mints
them for a node) publish a log line and metrics into a run another agent holds, while it
runs and after it ended: `sortie run logs` and the run's metrics never show them, while the
holder's own lines and metrics do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.auth import ACCOUNT_FILE, Signer, write_private
from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, open_bus
from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.permissions import Role
from tests.e2e.conftest import Installation, isolated_env, start_up, stop_up, wait_until

SCRIPT = """\
import os, pathlib, time
from sortie import Run
Run.get_context().log("loss", 0.5)
print("genuine line", flush=True)
release = pathlib.Path(os.environ["RELEASE_FILE"])
for _ in range(600):  # at most 60 s
    if release.exists():
        break
    time.sleep(0.1)
print("genuine end", flush=True)
"""

FORGED = "FORGED LINE from another agent"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    root = tmp_path_factory.mktemp("history")
    port = free_port()
    env = isolated_env(root)
    proc = start_up(root / "data", port, env, root / "up.log")
    try:
        yield Installation(
            url=f"nats://127.0.0.1:{port}",
            data_dir=(root / "data").resolve(),
            env=env,
            process=proc,
            log=root / "up.log",
        )
    finally:
        stop_up(proc)


async def forge(up: Installation, creds: Path, run_id: str, attempt: int) -> list[str]:
    """Publish a forged log line and metric into ``run_id`` as agent ``intruder``; the
    subjects the broker accepted."""
    bus = await open_bus(up.url, "intruder", auth=BusAuth(creds=creds))
    line = m.LogLine(t=time.time(), stream="stdout", text=FORGED)
    logs = codec.encode(m.LogBatch(run_id=run_id, attempt=attempt, lines=[line]))
    point = m.MetricPoint(name="loss", value=99.0, t=time.time())
    metrics = codec.encode(m.MetricBatch(run_id=run_id, attempt=attempt, points=[point]))
    accepted: list[str] = []
    try:
        for subject, data in (
            (subjects.logs(run_id, "intruder"), logs),
            (subjects.metrics(run_id, "intruder"), metrics),
        ):
            await bus.js.publish(subject, data, timeout=5)  # its own id: the broker takes it
            accepted.append(subject)
    finally:
        await bus.close()
    return accepted


async def metrics_of(up: Installation, run_id: str) -> dict[str, list[m.MetricValue]]:
    client = await Client.connect(up.url, creds=up.client_creds)
    try:
        return await client.metrics(run_id)
    finally:
        await client.close()


async def test_a_forged_line_and_metric_never_reach_another_agents_run(
    up: Installation, tmp_path: Path
) -> None:
    intruder = write_private(
        tmp_path / "intruder.creds",
        Signer.load(up.data_dir / "auth" / ACCOUNT_FILE).mint(Role("agent", "intruder")).text(),
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    release = tmp_path / "release"
    submitted = up.cli(
        "run", "submit", str(src), "--script", "train.py", "--env", f"RELEASE_FILE={release}",
        "--output", "json", check=True,
    )  # fmt: skip
    run_id = json.loads(submitted.stdout.splitlines()[0])["run_id"]
    wait_until(lambda: "genuine line" in up.cli("run", "logs", run_id).stdout, timeout=60)

    accepted = await forge(up, intruder, run_id, attempt=1)  # while it runs
    assert len(accepted) == 2
    release.write_text("go")
    assert up.cli("run", "wait", run_id, timeout=120).returncode == 0
    await forge(up, intruder, run_id, attempt=1)  # and after it ended

    logs = up.cli("run", "logs", run_id, check=True)
    assert "genuine line" in logs.stdout and "genuine end" in logs.stdout
    assert FORGED not in logs.stdout + logs.stderr
    assert await metrics_of(up, run_id) == {"loss": [0.5]}
    shown = up.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["agent_id"].startswith("local-")
