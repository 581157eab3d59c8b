"""An agent cut off from the broker stops its runs by itself once its lease has run out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.msg import Msg

from proto import codec, subjects
from proto import messages as m
from sortie.broker import BrokerProcess, start_broker
from sortie.bus import Bus, open_bus
from tests.agents.agent_builders import agent, spec, upload_snapshot


def touching(marker: Path) -> bytes:
    """A script that rewrites ``marker`` every 0.1 s for as long as it lives."""
    return (
        "import time\nwhile True:\n"
        f"    open({str(marker)!r}, 'w').write(str(time.time()))\n"
        "    time.sleep(0.1)\n"
    ).encode()


async def test_agent_cut_off_from_the_broker_stops_its_runs(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    marker = tmp_path / "alive"
    snapshot = await upload_snapshot(bus, {"train.py": (touching(marker), 0o644)})
    # short graces so the agent can stop within the test harness's bound afterwards
    async with agent(bus, tmp_path, lease_s=1.5, kill_grace_s=1.0, preempt_grace_s=1.0) as sched:
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
        await asyncio.sleep(0.5)
        before = marker.stat().st_mtime
        await asyncio.sleep(0.5)
        assert marker.stat().st_mtime > before, "the run keeps going within the lease"
        await asyncio.sleep(1.5 + 1.0 + 1.5)  # lease, kill grace, slack
        stopped_at = marker.stat().st_mtime
        await asyncio.sleep(0.6)
        assert marker.stat().st_mtime == stopped_at, "the run outlived the agent's lease"
        # the broker comes back (same port and store): the agent reconnects, flushes what it
        # still held and is a clean, idle agent again
        port = int(broker.url.rsplit(":", 1)[1])
        back = start_broker(broker.data_dir, port=port, sync_always=False)
        fresh = await open_bus(back.url, "test-after-outage")  # the test's own link gave up
        beats: asyncio.Queue[m.Heartbeat] = asyncio.Queue()

        async def on_beat(msg: Msg) -> None:
            beats.put_nowait(codec.decode(m.Heartbeat, msg.data))

        await fresh.nc.subscribe(subjects.heartbeat(sched.agent_id), cb=on_beat)
        try:
            beat = await asyncio.wait_for(beats.get(), 15)
            while beat.running:
                beat = await asyncio.wait_for(beats.get(), 15)
            assert beat.incarnation == incarnation  # the same agent, back and idle
        finally:
            await fresh.close()
    back.stop()


async def test_a_restarted_agent_kills_runs_its_killed_predecessor_left(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.agents.agent_builders import FakeScheduler

    marker = tmp_path / "alive"
    snapshot = await upload_snapshot(bus, {"train.py": (touching(marker), 0o644)})
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
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the run never started"
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no chance to stop its runs
        first.wait()
    await asyncio.sleep(0.5)
    before = marker.stat().st_mtime
    await asyncio.sleep(0.5)
    assert marker.stat().st_mtime > before, "the run outlives its SIGKILLed agent"
    sched.heartbeats.clear()
    second = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        await sched.incarnation(timeout=30)  # the new agent is up (and has reaped)
        stopped_at = marker.stat().st_mtime
        await asyncio.sleep(0.6)
        assert marker.stat().st_mtime == stopped_at, "the orphaned run is still going"
        assert not list((tmp_path / "agent" / "runs").glob("*/*.pid"))
    finally:
        second.terminate()
        second.wait(20)
