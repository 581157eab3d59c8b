"""A real agent and a real scheduler on a real broker: once the leader says it reads short
heartbeats, the agent names its unchanged listing by digest (a few hundred bytes a beat,
whatever it holds), lists in full when it changes and every few beats, and the scheduler
takes the short ones as that listing: a run held across many short beats is neither
re-sent nor requeued, and completes once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.msg import Msg

from sortie.agents.config import AgentConfig
from sortie.agents.core import FULL_LISTING_EVERY
from sortie.agents.daemon import run_agent
from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.daemon import SchedulerConfig
from sortie.scheduler.reconcile import Timing
from tests.harness import scheduler_running
from tests.scheduler.test_daemon_fencing import until

BEAT_S = 0.1


async def test_a_run_held_across_short_heartbeats_completes_once(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    beats: list[m.Heartbeat] = []

    async def on_beat(msg: Msg) -> None:
        beats.append(codec.decode(m.Heartbeat, msg.data))

    await bus.nc.subscribe(subjects.heartbeat("box"), cb=on_beat)
    # a run its agent is not seen to hold is judged quickly here: short heartbeats taken as
    # "holds nothing" would have it re-sent and requeued well before it ends
    timing = Timing(lease_s=3.0, assign_ack_s=0.5, kill_grace_s=2.0, unheld_s=1.0)
    sched = SchedulerConfig(url=broker.url, data_dir=tmp_path / "sched", tick_s=0.1, timing=timing)
    agent = AgentConfig(
        url=broker.url,
        agent_id="box",
        target="local",
        data_dir=tmp_path / "agent",
        heartbeat_interval_s=BEAT_S,
        lease_s=3.0,
        kill_grace_s=2.0,
        watchdog=False,
    )
    src = tmp_path / "src"
    src.mkdir()
    seconds = 4 * FULL_LISTING_EVERY * BEAT_S
    (src / "t.py").write_text(f"import time\ntime.sleep({seconds})\nprint('done')\n")
    stop = asyncio.Event()
    async with scheduler_running(sched):
        task = asyncio.create_task(run_agent(agent, stop))
        try:
            async with await Client.connect(broker.url) as c:
                sub = await c.submit(ScriptRunConfig(source_directory=src, script="t.py"))
            rec = await until(bus, sub.run_id, lambda r: r.state in TERMINAL_SEEN, 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
    assert (rec.state, rec.attempt, rec.exit_code) == (RunState.COMPLETED, 1, 0)
    held = m.RunRef(run_id=sub.run_id, attempt=1)
    listed = {hb.listing for hb in beats if held in hb.running}
    shorts = [hb for hb in beats if not hb.listed and hb.listing in listed]
    # most beats while it ran were short, with nothing listed in them
    assert len(shorts) >= 2 * FULL_LISTING_EVERY
    assert all(hb.running == [] and hb.finished == [] for hb in shorts)
    # and its listing went out in full again every FULL_LISTING_EVERY beats meanwhile
    fulls = [hb for hb in beats if hb.listed and held in hb.running]
    assert len(fulls) >= 3


TERMINAL_SEEN = (RunState.COMPLETED, RunState.FAILED, RunState.CANCELED)
