"""Simulated agents speaking the real protocol, for tests and benchmarks (no executor)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState


@dataclass
class FakeAgent:
    bus: Bus
    agent_id: str
    incarnation: str = "inc-1"
    target: str = "local"
    capacity: m.Capacity = field(default_factory=lambda: m.Capacity(cpus=4, memory_mb=8192))
    commands: asyncio.Queue[m.Assign | m.Cancel] = field(default_factory=asyncio.Queue)
    running: dict[str, int] = field(default_factory=dict)
    beating: bool = True
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sub: object = None
    _hb_now: object = None

    async def start(self, interval: float = 0.2) -> None:
        self._sub = await self.bus.nc.subscribe(
            subjects.agent_commands(self.agent_id), cb=self._on_cmd
        )
        self._hb_now = await self.bus.nc.subscribe(subjects.HEARTBEAT_NOW, cb=self._on_hb_now)
        await self.heartbeat()
        self._tasks.append(asyncio.create_task(self._beat(interval)))

    async def _on_hb_now(self, _msg: Msg) -> None:
        if self.beating:
            await self.heartbeat()

    async def _on_cmd(self, msg: Msg) -> None:
        cmd = codec.decode(m.AgentCommand, msg.data)
        if isinstance(cmd, m.Assign) and cmd.incarnation == self.incarnation:
            self.running[cmd.run_id] = cmd.attempt
        await self.commands.put(cmd)

    async def heartbeat(self) -> None:
        hb = m.Heartbeat(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            target=self.target,
            hostname="sim",
            capacity=self.capacity,
            running=[m.RunRef(run_id=r, attempt=a) for r, a in self.running.items()],
            sent_at=time.time(),
        )
        await self.bus.nc.publish(subjects.heartbeat(self.agent_id), codec.encode(hb))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.beating:
                await self.heartbeat()

    async def report(self, run_id: str, attempt: int, state: RunState, **kw: object) -> None:
        rep = m.RunReport(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            run_id=run_id,
            attempt=attempt,
            state=state,
            at=time.time(),
            **kw,
        )  # type: ignore[arg-type]
        await self.bus.js.publish(subjects.report(self.agent_id), codec.encode(rep))
        if state in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELED):
            self.running.pop(run_id, None)

    async def next_command(self, timeout: float = 10.0) -> m.Assign | m.Cancel:
        return await asyncio.wait_for(self.commands.get(), timeout)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for sub in (self._sub, self._hb_now):
            if sub is not None:
                await sub.unsubscribe()  # type: ignore[attr-defined]
