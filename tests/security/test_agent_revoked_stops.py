"""An agent whose credentials are revoked (as a detached machine's are) gives its runs back
when its lease lapses and then stops by itself: nothing heartbeats or reconnects forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sortie.agents.config import AgentConfig
from sortie.agents.daemon import run_agent
from sortie.bus.auth import Authority
from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus, BusAuth
from sortie.bus.revocation import push, revoke
from sortie.proto import subjects
from sortie.proto.permissions import Role
from tests.security.auth_fixtures import authority as authority  # the fixtures, shared
from tests.security.auth_fixtures import mint
from tests.security.auth_fixtures import scheduler_bus as scheduler_bus
from tests.security.auth_fixtures import secure_broker as secure_broker


async def test_a_revoked_agent_stops_by_itself(
    secure_broker: BrokerProcess, authority: Authority, scheduler_bus: Bus, tmp_path: Path
) -> None:
    beats: list[bytes] = []

    async def on_heartbeat(msg: object) -> None:
        beats.append(b"")

    await scheduler_bus.nc.subscribe(subjects.heartbeat("box1"), cb=on_heartbeat)
    creds = mint(authority, tmp_path, Role("agent", "box1"))
    config = AgentConfig(
        url=secure_broker.url,
        agent_id="box1",
        target="box1",
        data_dir=tmp_path / "agent",
        heartbeat_interval_s=0.2,
        lease_s=2.0,
        watchdog=False,
        auth=BusAuth(creds=creds),
        exit_when_refused=True,  # as an agent started over SSH
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    for _ in range(100):
        if beats:
            break
        await asyncio.sleep(0.1)
    assert beats, "the agent never heartbeat"

    revoke(authority, "box1")
    await push(authority, secure_broker.url, None)
    await asyncio.wait_for(task, 30)  # it stopped on its own: nobody set stop before
    assert stop.is_set()
