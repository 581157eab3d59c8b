"""An agent whose target is gone (a detached machine, a deleted cluster) stops when the
scheduler says so, instead of heartbeating and reconnecting forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.msg import Msg

from sortie.agents.config import AgentConfig
from sortie.agents.daemon import read_command, run_agent
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m


def test_retire_is_a_command() -> None:
    cmd = read_command(codec.encode(m.Retire(reason="its target lab-box was removed")))
    assert cmd == m.Retire(reason="its target lab-box was removed")


async def test_a_retired_agent_stops_by_itself(bus: Bus, tmp_path: Path) -> None:
    beats: list[m.Heartbeat] = []

    async def on_heartbeat(msg: Msg) -> None:
        beats.append(codec.decode(m.Heartbeat, msg.data))

    await bus.nc.subscribe(subjects.heartbeat("lab-box"), cb=on_heartbeat)
    config = AgentConfig(
        url=bus.url,
        agent_id="lab-box",
        target="lab-box",
        data_dir=tmp_path / "agent",
        heartbeat_interval_s=0.2,
        watchdog=False,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    for _ in range(100):
        if beats:
            break
        await asyncio.sleep(0.1)
    assert beats, "the agent never heartbeat"
    retire = m.Retire(reason="agent lab-box's target lab-box was removed")
    await bus.nc.publish(subjects.agent_commands("lab-box"), codec.encode(retire))
    await asyncio.wait_for(task, 20)  # it ended on its own: nobody set stop
    seen = len(beats)
    await asyncio.sleep(0.6)
    assert len(beats) == seen  # no heartbeat after it stopped
