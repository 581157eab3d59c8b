"""An agent cut off from the broker stops its runs by itself once its lease has run out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from sortie.agents.isolation import ENV_RUN_WRITABLE
from sortie.bus.broker import BrokerProcess, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests.agents.agent_builders import FakeScheduler, Reports, agent, spec, upload_snapshot


def touching(marker: Path) -> bytes:
    """A script that rewrites ``marker`` every 0.1 s for as long as it lives."""
    return (
        "import time\nwhile True:\n"
        f"    open({str(marker)!r}, 'w').write(str(time.time()))\n"
        "    time.sleep(0.1)\n"
    ).encode()


def shared_with_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the agents started from here on let every run write (SORTIE_RUN_WRITABLE):
    a run may write nothing else outside its own (agents.isolation)."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    shared.chmod(0o1777)
    monkeypatch.setenv(ENV_RUN_WRITABLE, str(shared))
    return shared


async def test_agent_cut_off_from_the_broker_stops_its_runs(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = shared_with_runs(tmp_path, monkeypatch) / "alive"
    snapshot = await upload_snapshot(bus, {"train.py": (touching(marker), 0o644)})
    # short graces so the agent can stop within the test harness's bound afterwards
    async with agent(bus, tmp_path, lease_s=3.0, kill_grace_s=1.0, preempt_grace_s=1.0) as sched:
        incarnation = await sched.incarnation()
        await sched.send(
            m.Assign(run_id="r1", attempt=1, incarnation=incarnation, spec=spec(snapshot))
        )
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the run never started"
        broker.kill()  # the broker is gone: the agent can neither report nor renew its lease
        before = marker.stat().st_mtime
        await asyncio.sleep(0.8)
        assert marker.stat().st_mtime > before, "the run keeps going within the lease"
        assert await _stops_writing(marker, within=30.0), "the run outlived the agent's lease"
        # the broker comes back (same port and store): the agent reconnects, flushes what it
        # still held and is a clean, idle agent again
        port = int(broker.url.rsplit(":", 1)[1])
        back = start_broker(broker.data_dir, port=port, sync_always=False)
        fresh = await open_bus(back.url, "test-after-outage")  # the test's own link gave up
        beats: asyncio.Queue[m.Heartbeat] = asyncio.Queue()

        async def on_beat(msg: Msg) -> None:
            beats.put_nowait(codec.decode(m.Heartbeat, msg.data))

        await fresh.nc.subscribe(subjects.heartbeat(sched.agent_id), cb=on_beat)
        reports = Reports(fresh.js)
        await reports.open()
        try:
            beat = await asyncio.wait_for(beats.get(), 15)
            while beat.running:
                beat = await asyncio.wait_for(beats.get(), 15)
            assert beat.incarnation == incarnation  # the same agent, back and idle
            # and it gave the stopped attempt back, so the run is requeued, not left hanging
            given_back = await reports.until_terminal_or(RunState.QUEUED, "r1")
            assert given_back.error is not None and given_back.error.kind == "lost"
        finally:
            await reports.close()
            await fresh.close()
    back.stop()


async def _stops_writing(marker: Path, within: float) -> bool:
    """Whether ``marker`` (rewritten every 0.1 s while its writer lives) goes a full second
    unchanged within ``within`` seconds: its writer was stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        seen = marker.stat().st_mtime
        await asyncio.sleep(1.0)
        if marker.stat().st_mtime == seen:
            return True
    return False


def test_leftovers_of_a_dead_leader_are_killed_by_their_group(tmp_path: Path) -> None:
    """What a starting agent (or the watchdog) does with a recorded run whose leader died
    and left a child running in its group."""
    import subprocess
    import sys
    import time

    from sortie.agents import orphans

    marker = tmp_path / "alive"
    child = touching(marker).decode()
    leader_code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
    leader = subprocess.Popen([sys.executable, "-c", leader_code], start_new_session=True)
    pid_file = tmp_path / "runs" / "r1" / "1.pid"
    pid_file.parent.mkdir(parents=True)
    orphans.record(pid_file, leader.pid)
    leader.wait()  # the leader is gone; its child goes on in its group
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.05)
    assert orphans.group_members(leader.pid), "the child should be alive in the group"
    reaped = orphans.kill_leftovers(tmp_path / "runs")
    assert reaped == orphans.Leftovers(killed=[leader.pid], alive=[])
    # gone when it returns: the agent takes new attempts right after it
    assert not orphans.group_members(leader.pid)
    assert not pid_file.exists()


def test_waiting_for_killed_groups_returns_once_they_are_gone_or_at_the_bound() -> None:
    """A starting agent waits for the groups it killed to be gone (a SIGKILL takes effect
    later), and never for ever."""
    import subprocess
    import sys

    from sortie.agents import orphans

    ending = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.5)"], start_new_session=True
    )
    lasting = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        assert orphans.wait_gone([ending.pid], 30.0) == []
        assert ending.poll() is not None  # it had ended when the wait returned
        assert orphans.wait_gone([lasting.pid], 0.3) == [lasting.pid]
        assert lasting.poll() is None
    finally:
        ending.kill()
        lasting.kill()
        ending.wait()
        lasting.wait()


async def test_a_killed_agents_run_dies_with_it_and_the_next_agent_kills_its_leftovers(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import subprocess
    import sys

    shared = shared_with_runs(tmp_path, monkeypatch)
    marker = shared / "alive"  # touched by a child the script starts (in the run's group)
    leader = shared / "leader"  # touched by the script itself
    child = touching(marker).decode()
    script = (
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
        + touching(leader).decode()
    )
    snapshot = await upload_snapshot(bus, {"train.py": (script.encode(), 0o644)})
    sched = FakeScheduler(bus, "orphan-test")
    await bus.nc.subscribe(subjects.heartbeat("orphan-test"), cb=sched.on_heartbeat)
    argv = [
        sys.executable,
        "-m",
        "sortie.cli",
        "--url",
        broker.url,
        "--log-level",
        "warning",
        "agent",
        "--target",
        "local",
        "--name",
        "orphan-test",
        "--data-dir",
        str(tmp_path / "agent"),
    ]
    first = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        incarnation = await sched.incarnation(timeout=30)
        await sched.send(
            m.Assign(run_id="r1", attempt=1, incarnation=incarnation, spec=spec(snapshot))
        )
        for _ in range(300):
            if marker.exists() and leader.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists() and leader.exists(), "the run never started"
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no chance to stop its runs
        first.wait()
    # the script dies with its agent (the kernel), and so does the child it started in its
    # group (the agent's watchdog)
    await asyncio.sleep(1.0)
    child_at, leader_at = marker.stat().st_mtime, leader.stat().st_mtime
    await asyncio.sleep(0.6)
    assert leader.stat().st_mtime == leader_at, "the script outlived its SIGKILLed agent"
    assert marker.stat().st_mtime == child_at, "the script's child outlived its agent"
    sched.heartbeats.clear()
    second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        await sched.incarnation(timeout=30)  # the new agent is up, and has cleared records
        assert not list((tmp_path / "agent" / "runs").glob("*/*.pid"))
    finally:
        second.terminate()
        second.wait(20)


def agent_argv(url: str, name: str, data_dir: Path, *extra: str) -> list[str]:
    import sys

    return [
        sys.executable, "-m", "sortie.cli", "--url", url, "--log-level", "warning",
        "agent", "--target", "local", "--name", name, "--data-dir", str(data_dir), *extra,
    ]  # fmt: skip


async def test_an_agent_paused_past_its_lease_stops_its_runs_when_it_resumes(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP leaves the agent connected as far as it knows; its heartbeats were not heard,
    so on waking it must treat the lease as lost, stop the run and give it back."""
    import os
    import signal
    import subprocess

    marker = shared_with_runs(tmp_path, monkeypatch) / "alive"
    snapshot = await upload_snapshot(bus, {"train.py": (touching(marker), 0o644)})
    sched = FakeScheduler(bus, "paused-test")
    await bus.nc.subscribe(subjects.heartbeat("paused-test"), cb=sched.on_heartbeat)
    reports = Reports(bus.js)
    await reports.open()
    argv = agent_argv(broker.url, "paused-test", tmp_path / "agent", "--lease", "3")
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        incarnation = await sched.incarnation(timeout=30)
        await sched.send(
            m.Assign(run_id="r1", attempt=1, incarnation=incarnation, spec=spec(snapshot))
        )
        await reports.until_state("r1", RunState.RUNNING)
        os.kill(proc.pid, signal.SIGSTOP)
        await asyncio.sleep(4.5)  # past the 3 s lease; the run goes on meanwhile
        before = marker.stat().st_mtime
        await asyncio.sleep(0.3)
        assert marker.stat().st_mtime > before, "the run itself was not paused"
        os.kill(proc.pid, signal.SIGCONT)
        given_back = await reports.until_terminal_or(RunState.QUEUED, "r1", timeout=20)
        assert given_back.error is not None and given_back.error.kind == "lost", given_back
        stopped_at = marker.stat().st_mtime
        await asyncio.sleep(0.6)
        assert marker.stat().st_mtime == stopped_at, "the run outlived the lapsed lease"
    finally:
        await reports.close()
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(20)


async def test_an_agent_paused_past_lease_and_kill_grace_has_its_runs_killed_by_its_watchdog(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused so long the scheduler would already requeue: the agent cannot stop anything,
    so its watchdog kills the run (before lease + kill grace), and the agent, once resumed,
    gives the attempt back."""
    import os
    import signal
    import subprocess
    import time

    marker = shared_with_runs(tmp_path, monkeypatch) / "alive"
    snapshot = await upload_snapshot(bus, {"train.py": (touching(marker), 0o644)})
    sched = FakeScheduler(bus, "frozen-test")
    await bus.nc.subscribe(subjects.heartbeat("frozen-test"), cb=sched.on_heartbeat)
    reports = Reports(bus.js)
    await reports.open()
    extra = ("--lease", "2", "--kill-grace", "2")
    proc = subprocess.Popen(
        agent_argv(broker.url, "frozen-test", tmp_path / "agent", *extra),
        stderr=subprocess.DEVNULL,
    )
    try:
        incarnation = await sched.incarnation(timeout=30)
        await sched.send(
            m.Assign(run_id="r1", attempt=1, incarnation=incarnation, spec=spec(snapshot))
        )
        await reports.until_state("r1", RunState.RUNNING)
        os.kill(proc.pid, signal.SIGSTOP)
        paused_at = time.time()
        await asyncio.sleep(6.0)  # well past lease + kill grace (4 s)
        stopped_at = marker.stat().st_mtime
        # the watchdog fired at lease + 3/4 of the kill grace (3.5 s) after the last renewal
        assert stopped_at - paused_at < 4.0, "the run went on past lease + kill grace"
        await asyncio.sleep(0.5)
        assert marker.stat().st_mtime == stopped_at, "the run is still going"
        os.kill(proc.pid, signal.SIGCONT)
        given_back = await reports.until_terminal_or(RunState.QUEUED, "r1", timeout=20)
        assert given_back.error is not None and given_back.error.kind == "lost", given_back
    finally:
        await reports.close()
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(20)
