"""Several `sortie scheduler` processes on one broker: one leads, the others stand by.

Real processes on a real nats-server (tests/faults.py): a second scheduler started against a
running installation waits as a standby (it answers nothing and places nothing), takes over
with a higher epoch when the leader is killed, and `sortie status` shows who is which. A leader
paused past its lease and resumed finds it was deposed and exits 1; a broker restart deposes
no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sortie.client.client import Client, NoScheduler
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto.states import RunState
from tests.faults import Cluster, until

LEASE = ("--leader-lease", "2")  # a standby takes over 2 s after the leader's last renewal


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    try:
        yield c
    finally:
        c.close()


def events(log: Path) -> list[str]:
    """The ``event`` of each JSON line a daemon logged so far."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(str(entry.get("event", "")))
    return out


def said(log: Path, start: str) -> str | None:
    """The first event logged that starts with ``start``."""
    return next((e for e in events(log) if e.startswith(start)), None)


def schedulers(cluster: Cluster) -> list[dict[str, Any]]:
    done = cluster.cli("status", "--output", "json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["schedulers"])


def roles(cluster: Cluster) -> list[tuple[str, int, int]]:
    """(role, pid, epoch) of each scheduler `sortie status` lists."""
    return [(s["role"], s["pid"], s["epoch"]) for s in schedulers(cluster)]


async def run_once(client: Client, tmp_path: Path) -> None:
    """Submit a run to target ``box``; it completes at its first attempt, placed once."""
    await until(lambda: _has_box(client), 30)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "t.py").write_text("print('hello')\n")
    opts = ScriptRunConfig(
        source_directory=src, script="t.py", run_config=RunConfiguration(target="box")
    )
    run_id = (await client.submit(opts)).run_id
    done = await asyncio.wait_for(client.wait(run_id), 60)
    assert (done.state, done.attempt) == (RunState.COMPLETED, 1), done
    placed = [h for h in done.history if h.state is RunState.PREPARING]
    assert len(placed) == 1, done.history


async def test_a_second_scheduler_stands_by_and_takes_over_when_the_leader_is_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_scheduler(*LEASE)
    assert cluster.scheduler is not None
    first = cluster.scheduler.pid
    async with await cluster.client() as client:
        second = cluster.start_another_scheduler("scheduler-2", *LEASE)
        log2 = cluster.root / "scheduler-2.log"
        line = await until(lambda: _said(log2, "standby: leader is "), 30)
        assert line.endswith(f"pid {first} epoch 1"), line
        await until(
            lambda: _listed(cluster, [("leader", first, 1), ("standby", second.pid, 1)]), 30
        )

        cluster.start_agent("a1", "--target", "box", "--cpus", "1")
        await run_once(client, tmp_path)
        await asyncio.sleep(1.0)  # a few of the standby's lease reads more
        assert said(log2, "scheduler ready") is None, events(log2)  # it serves nothing
        assert second.poll() is None

        cluster.kill_scheduler()  # kill -9
        # a request meanwhile finds no scheduler listening, sees a lease held (a takeover
        # may be under way), waits, and is answered by the new leader
        assert await client._takeover_wait() > 2.0
        assert "box" in {t.name for t in await client.targets()}
        await until(lambda: _said(log2, "leader: epoch 2"), 30)
        await until(lambda: _said(log2, "scheduler ready"), 30)
        await run_once(client, tmp_path)  # placed by the new leader
        leader = schedulers(cluster)[0]
        assert (leader["role"], leader["pid"], leader["epoch"]) == ("leader", second.pid, 2)
        assert leader["lease_age_s"] <= 2.0 and leader["lease_s"] == 2.0

        # a clean stop gives the lease up: nobody is taking over, a request is refused at once
        second.terminate()
        assert await asyncio.to_thread(_exit_code, second, 30) == 0
        assert await client._takeover_wait() == 0.0
        with pytest.raises(NoScheduler):
            await client.targets()


async def test_a_paused_leader_is_deposed_and_exits_when_resumed(cluster: Cluster) -> None:
    cluster.start_scheduler(*LEASE)
    assert cluster.scheduler is not None
    first = cluster.scheduler
    async with await cluster.client():
        second = cluster.start_another_scheduler("scheduler-2", *LEASE)
        log2 = cluster.root / "scheduler-2.log"
        await until(lambda: _said(log2, "standby: leader is "), 30)
        os.kill(first.pid, signal.SIGSTOP)  # past its lease: the standby takes over
        try:
            await until(lambda: _said(log2, "leader: epoch 2"), 30)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        code = await asyncio.to_thread(_exit_code, first, 30)
        assert code == 1
        deposed = said(cluster.root / "scheduler.log", "deposed: ")
        assert deposed == (
            f"deposed: scheduler {_host()} pid {second.pid} leads at epoch 2 "
            "(this one led at epoch 1); stopping"
        )
        assert roles(cluster) == [("leader", second.pid, 2)]
        assert second.poll() is None


async def test_a_broker_restart_longer_than_the_lease_changes_no_leader(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Neither can reach the broker, so neither renews nor reads: the standby gives the
    leader a whole lease from when the broker answers again, and the leader stays."""
    lease = ("--leader-lease", "3")
    cluster.start_scheduler(*lease)
    assert cluster.scheduler is not None
    first = cluster.scheduler.pid
    # the first leads before the second starts (else the second, quicker to start under
    # load, may take the free lease first)
    await until(lambda: _said(cluster.root / "scheduler.log", "scheduler ready"), 30)
    second = cluster.start_another_scheduler("scheduler-2", *lease)
    log2 = cluster.root / "scheduler-2.log"
    await until(lambda: _said(log2, "standby: leader is "), 30)
    cluster.start_agent("a1", "--target", "box", "--cpus", "1")
    cluster.restart_broker(down_s=4.0)  # kill -9, 4 s away, back on the same store
    async with await cluster.client() as client:
        await run_once(client, tmp_path)
        await asyncio.sleep(4.0)  # more than a lease since both could read again
        await run_once(client, tmp_path)
    assert roles(cluster) == [("leader", first, 1), ("standby", second.pid, 1)]
    assert said(log2, "leader: ") is None, events(log2)
    assert cluster.scheduler.poll() is None and second.poll() is None


async def _said(log: Path, start: str) -> str | None:
    return said(log, start) if log.exists() else None


async def _has_box(client: Client) -> bool:
    return "box" in {t.name for t in await client.targets()}


async def _listed(cluster: Cluster, expected: list[tuple[str, int, int]]) -> bool:
    return roles(cluster) == expected


def _exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return proc.wait(timeout)


def _host() -> str:
    import socket

    return socket.gethostname()
