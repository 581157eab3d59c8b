"""`sortie run list` on the scheduler's run index, against a real `sortie up`: --search, --limit
and filters pushed to the index, children under their parent, the latest metrics on the record;
and with no scheduler answering, the full read of every record, said on stderr."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import open_bus
from sortie.client.client import Client
from sortie.proto import codec
from sortie.proto.states import RunState
from tests.builders import record, spec
from tests.e2e.conftest import REPO, SORTIE, Installation, isolated_env

SCRIPT = """\
from sortie import Run
run = Run.get_context()
for i in range(3):
    run.log("loss", 1.0 / (i + 1))
run.log("accuracy", 0.75)
run.log_row("table", a=1, b=2)
"""


def submit(installation: Installation, src: Path, *extra: str) -> str:
    proc = installation.cli(
        "run", "submit", str(src), "--script", "train.py", "--wait", "-o", "json", *extra
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def run_ids(installation: Installation, *filters: str) -> list[str]:
    listed = installation.json("run", "list", *filters)
    assert isinstance(listed, list)
    return [r["run_id"] for r in listed]


def test_run_list_pages_the_index_and_runs_carry_their_latest_metrics(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    first = submit(installation, src, "--experiment", "indexed")
    second = submit(installation, src, "--experiment", "indexed", "--tag", "kind=b")
    assert run_ids(installation, "--experiment", "indexed") == [second, first]
    assert run_ids(installation, "--experiment", "indexed", "--limit", "1") == [second]
    assert run_ids(installation, "--search", first[-8:].upper()) == [first]  # any case
    assert run_ids(installation, "--experiment", "indexed", "--tag", "kind=b") == [second]
    assert run_ids(installation, "--search", "no-such-run") == []
    text = installation.cli("run", "list", "--experiment", "indexed", check=True)
    assert text.stderr == ""  # the index answered: no note of a full read
    assert [line.split()[0] for line in text.stdout.splitlines()[1:]] == [second, first]

    async def latest() -> dict[str, float]:
        async with await Client.connect(installation.url, creds=installation.client_creds) as c:
            return (await c.get_run(first)).metrics

    # the last value of each plain metric (a table's cells are not metrics of their own)
    assert asyncio.run(latest()) == {"loss": 1.0 / 3, "accuracy": 0.75}


def test_without_a_scheduler_run_list_reads_every_record_and_says_so(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    async def store() -> None:
        bus = await open_bus(broker.url, "writer", create=True)
        for i, state in enumerate([RunState.COMPLETED, RunState.FAILED]):
            rec = record(f"stored_{i}", state, spec=spec(experiment="e"), created_at=10.0 + i)
            await bus.runs.put(rec.run_id, codec.encode(rec))
        await bus.close()

    asyncio.run(store())
    env = {**isolated_env(tmp_path), "SORTIE_URL": broker.url}
    proc = subprocess.run(
        [*SORTIE, "run", "list", "--state", "Failed", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)] == ["stored_1"]
    assert "no scheduler answers, so every run record is read" in proc.stderr
