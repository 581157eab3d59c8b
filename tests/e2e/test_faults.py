"""Fault tests with real processes: kill -9 the scheduler, restart nats-server, kill an agent.

Each test runs the daemons as separate processes (tests/faults.py) against a real nats-server
and checks what a user would see through the client: no run lost, none run twice, timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sortie.client.client import Client
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests.e2e.conftest import shared_dir
from tests.faults import Cluster, processes, until


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    try:
        yield c
    finally:
        c.close()


def source(tmp_path: Path, body: str) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(body)
    return src


async def agent_states(client: Client) -> dict[str, str]:
    reply = await client.agents(m.AgentList())
    return {a.agent_id: a.state for a in reply.agents}


async def targets(client: Client) -> set[str]:
    return {t.name for t in await client.targets()}


def gated(gate: Path, ledger: Path) -> str:
    """A script that logs its start, waits for ``gate`` to exist, then logs its end."""
    return (
        "import os, time\n"
        "tag = f\"{os.environ['SORTIE_RUN_ID']} {os.environ['SORTIE_ATTEMPT']}\"\n"
        f"open({str(ledger)!r}, 'a').write(f'start {{tag}}\\n')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        f"open({str(ledger)!r}, 'a').write(f'done {{tag}}\\n')\n"
    )


async def test_scheduler_kill_9_loses_nothing_and_its_nodes_do_not_outlive_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "box", "--cpus", "1")
    gate, ledger = tmp_path / "gate", shared_dir(cluster.root) / "ledger"
    src = source(tmp_path, gated(gate, ledger))
    async with await cluster.client() as client:
        await until(lambda: _has(client, "box"), 30)
        # a process-provider cluster keeps one node running: a child of the scheduler
        created = cluster.cli(
            "compute",
            "create",
            "pool",
            "--vm-size",
            "local_small",
            "--min-nodes",
            "1",
            "--max-nodes",
            "1",
        )
        assert created.returncode == 0, created.stderr
        sched_pid = cluster.scheduler.pid if cluster.scheduler else 0
        node = await until(lambda: _node_agent(sched_pid), 60)

        opts = ScriptRunConfig(
            source_directory=src, script="train.py", run_config=RunConfiguration(target="box")
        )
        running = (await client.submit(opts)).run_id
        queued = [(await client.submit(opts)).run_id for _ in range(2)]
        await until(lambda: _state_is(client, running, RunState.RUNNING), 60)

        cluster.kill_scheduler()
        # the node agent notices its scheduler is gone and stops by itself
        await until(lambda: _gone(node), 15)
        # a submit while no scheduler answers waits for one (same submission id on retry)
        late = asyncio.create_task(client.submit(opts))
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        cluster.start_scheduler()
        late_id = (await asyncio.wait_for(late, 60)).run_id
        back_in = time.monotonic() - t0

        # nothing was lost and nobody was judged lost for the scheduler's absence
        assert (await agent_states(client)).get("a1") == "ready"
        rec = await client.get_run(running)
        assert (rec.state, rec.attempt) == (RunState.RUNNING, 1), rec
        for run_id in queued:
            assert (await client.get_run(run_id)).state is RunState.QUEUED
        gate.touch()
        for run_id in [running, *queued, late_id]:
            done = await asyncio.wait_for(client.wait(run_id), 60)
            assert (done.state, done.attempt) == (RunState.COMPLETED, 1), done
    lines = ledger.read_text().splitlines()
    assert sorted(x for x in lines if x.startswith("done")) == sorted(
        f"done {r} 1" for r in [running, *queued, late_id]
    ), lines
    assert back_in < 30, f"the submit waited {back_in:.1f}s for the restarted scheduler"


async def test_nats_server_restart_every_daemon_resumes_and_no_run_is_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "box")
    script = (
        "import time\n"
        "for i in range(30):\n"
        "    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    src = source(tmp_path, script)
    opts = ScriptRunConfig(
        source_directory=src, script="train.py", run_config=RunConfiguration(target="box")
    )
    async with await cluster.client() as client:
        await until(lambda: _has(client, "box"), 30)
        first = (await client.submit(opts)).run_id
        await until(lambda: _state_is(client, first, RunState.RUNNING), 60)
    # kill -9 the broker mid-run, keep it down 2 s (inside every lease), bring it back
    await asyncio.to_thread(cluster.restart_broker, 2.0)
    async with await cluster.client() as client:
        done = await asyncio.wait_for(client.wait(first), 60)
        assert (done.state, done.attempt) == (RunState.COMPLETED, 1), done
        # the scheduler's API, heartbeat and report consumers all resumed: a new run goes
        # the whole way
        second = (await client.submit(opts)).run_id
        done2 = await asyncio.wait_for(client.wait(second), 60)
        assert (done2.state, done2.attempt) == (RunState.COMPLETED, 1), done2
        lines = [x.text for x in await _logs(client, first)]
        assert [x for x in lines if x.startswith("line")] == [f"line {i}" for i in range(30)]
        assert (await agent_states(client)).get("a1") == "ready"


async def test_a_killed_agent_is_lost_within_15s_and_its_run_requeued_within_30s(
    cluster: Cluster, tmp_path: Path
) -> None:
    # the defaults: heartbeats every second, lease 10 s, kill grace 10 s
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "box", "--cpus", "1")
    ledger = shared_dir(cluster.root) / "ledger"  # runs write only there, beyond their own
    script = (
        "import os, time\n"
        "attempt = int(os.environ['SORTIE_ATTEMPT'])\n"
        f"open({str(ledger)!r}, 'a').write(f'start {{attempt}}\\n')\n"
        "time.sleep(600 if attempt == 1 else 0)\n"
        f"open({str(ledger)!r}, 'a').write(f'done {{attempt}}\\n')\n"
    )
    src = source(tmp_path, script)
    opts = ScriptRunConfig(
        source_directory=src, script="train.py", run_config=RunConfiguration(target="box")
    )
    async with await cluster.client() as client:
        await until(lambda: _has(client, "box"), 30)
        run_id = (await client.submit(opts)).run_id
        await until(lambda: _state_is(client, run_id, RunState.RUNNING), 60)
        cluster.start_agent("a2", "--target", "box", "--cpus", "1")
        await until(lambda: _agent_is(client, "a2", "ready"), 30)
        cluster.kill_agent("a1")
        t0 = time.monotonic()
        await until(lambda: _agent_is(client, "a1", "lost"), 20, interval=0.2)
        lost_after = time.monotonic() - t0
        await until(lambda: _attempt_at_least(client, run_id, 2), 35, interval=0.2)
        requeued_after = time.monotonic() - t0
        done = await asyncio.wait_for(client.wait(run_id), 60)
    assert (done.state, done.attempt, done.agent_id) == (RunState.COMPLETED, 2, "a2"), done
    assert lost_after <= 15, f"lost detected after {lost_after:.1f}s"
    assert requeued_after <= 30, f"requeued after {requeued_after:.1f}s"
    # the first attempt died with its agent: it never completed
    assert ledger.read_text().splitlines() == ["start 1", "start 2", "done 2"]


# --- small waits --------------------------------------------------------------------------------


async def _has(client: Client, target: str) -> bool:
    return target in await targets(client)


async def _state_is(client: Client, run_id: str, state: RunState) -> bool:
    return (await client.get_run(run_id)).state is state


async def _attempt_at_least(client: Client, run_id: str, attempt: int) -> bool:
    return (await client.get_run(run_id)).attempt >= attempt


async def _agent_is(client: Client, agent_id: str, state: str) -> bool:
    return (await agent_states(client)).get(agent_id) == state


async def _node_agent(scheduler_pid: int) -> int | None:
    for pid, cmd in processes().items():
        if f"--exit-with-parent {scheduler_pid}" in cmd:
            return pid
    return None


async def _gone(pid: int) -> bool:
    return pid not in processes()


async def _logs(client: Client, run_id: str) -> list[m.LogLine]:
    return [line async for _rank, line in client.logs(run_id)]


async def test_a_script_that_ended_is_not_run_again_when_its_agent_dies_before_reporting(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The agent is killed while it uploads the outputs of a script that ended: the next
    agent on its data directory reports the recorded exit, so the run completes as attempt 1
    and its script ran once. (The test kills it: a run may not signal its agent.)"""
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "box")
    ledger = shared_dir(cluster.root) / "ledger"  # runs write only there, beyond their own
    script = (
        "import os\n"
        "out = os.environ['SORTIE_OUTPUTS_DIR']\n"
        "os.makedirs(out, exist_ok=True)\n"
        "with open(os.path.join(out, 'big.bin'), 'wb') as f:\n"
        "    f.write(os.urandom(96 << 20))  # its upload keeps the agent busy after the exit\n"
        f"open({str(ledger)!r}, 'a').write('done\\n')\n"
    )
    src = source(tmp_path, script)
    async with await cluster.client() as client:
        await until(lambda: _has(client, "box"), 30)
        opts = ScriptRunConfig(
            source_directory=src, script="train.py", run_config=RunConfiguration(target="box")
        )
        run_id = (await client.submit(opts)).run_id
        await until(
            lambda: asyncio.to_thread(lambda: ledger.exists() and ledger.read_text()), 60, 0.02
        )
        await asyncio.sleep(0.3)  # the script has exited; the agent uploads its outputs
        cluster.agents["a1"].kill()
        await until(lambda: asyncio.to_thread(lambda: cluster.agents["a1"].poll() is not None), 60)
        cluster.start_agent("a1")  # as a supervisor (systemd) would
        done = await asyncio.wait_for(client.wait(run_id), 60)
    assert (done.state, done.attempt) == (RunState.COMPLETED, 1), done
    assert ledger.read_text() == "done\n"
    assert "left unreported" in cluster.log_tail("agent-a1", 20_000)
