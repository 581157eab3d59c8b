"""Simulated agents speaking the real protocol, for tests and benchmarks (no executor)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sortie.agents.core import FULL_LISTING_EVERY, listing_digest
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler


@dataclass
class FakeAgent:
    """An agent without an executor: it heartbeats, holds what it was assigned, and hands
    every command to the test (``next_command``).

    ``assigned_at``: where a benchmark's thousands of agents timestamp each run's first
    Assign (``time.perf_counter``) instead of queueing commands nobody reads.
    """

    bus: Bus
    agent_id: str
    incarnation: str = "inc-1"
    target: str = "local"
    capacity: m.Capacity = field(default_factory=lambda: m.Capacity(cpus=4, memory_mb=8192))
    commands: asyncio.Queue[m.Assign | m.Cancel] = field(default_factory=asyncio.Queue)
    running: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)  # listed as finished in heartbeats
    beating: bool = True
    assigned_at: dict[str, float] | None = None
    # short heartbeats, as a real agent sends them (agents.core.heartbeat_listing): only
    # while the newest leader says it reads them, in full when the listing changed
    short_heartbeats: bool = False
    _listed: tuple[object, str] = ((), "")  # the listing last sent in full, and its digest
    _short_beats: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _subs: list[Subscription] = field(default_factory=list)

    async def start(self, interval: float = 0.2) -> None:
        nc = self.bus.nc
        self._subs.append(
            await nc.subscribe(subjects.agent_commands(self.agent_id), cb=self._on_cmd)
        )
        self._subs.append(await nc.subscribe(subjects.HEARTBEAT_NOW, cb=self._on_hb_now))
        await self.heartbeat()
        self._tasks.append(asyncio.create_task(self._beat(interval)))

    async def _on_hb_now(self, msg: Msg) -> None:
        if msg.data:
            self.short_heartbeats = codec.decode(m.HeartbeatNow, msg.data).short_heartbeats
        if self.beating:
            await self.heartbeat(asked=True)

    async def _on_cmd(self, msg: Msg) -> None:
        cmd = codec.decode(m.AgentCommand, msg.data)
        if isinstance(cmd, m.Assign):
            self.short_heartbeats = cmd.short_heartbeats
        if isinstance(cmd, m.Assign) and cmd.incarnation == self.incarnation:
            self.running[cmd.run_id] = cmd.attempt
            if self.assigned_at is not None:
                self.assigned_at.setdefault(cmd.run_id, time.perf_counter())
                return
        await self.commands.put(cmd)

    async def heartbeat(self, *, asked: bool = False) -> None:
        key = (tuple(self.running.items()), tuple(self.finished.items()))
        changed = key != self._listed[0]
        listed = (
            asked
            or changed
            or not self.short_heartbeats
            or self._short_beats + 1 >= FULL_LISTING_EVERY
        )
        running: list[m.RunRef] = []
        finished: list[m.RunRef] = []
        if listed:
            running = [m.RunRef(run_id=r, attempt=a) for r, a in sorted(self.running.items())]
            finished = [m.RunRef(run_id=r, attempt=a) for r, a in sorted(self.finished.items())]
            digest = listing_digest(running, finished) if changed else self._listed[1]
            self._listed, self._short_beats = (key, digest), 0
        else:
            digest = self._listed[1]
            self._short_beats += 1
        hb = m.Heartbeat(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            target=self.target,
            hostname="sim",
            capacity=self.capacity,
            running=running,
            finished=finished,
            listing=digest,
            listed=listed,
            sent_at=time.time(),
        )
        await self.bus.nc.publish(subjects.heartbeat(self.agent_id), codec.encode(hb))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.beating:
                await self.heartbeat()

    async def report(self, run_id: str, attempt: int, state: RunState, **kw: Any) -> None:
        rep = m.RunReport(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            run_id=run_id,
            attempt=attempt,
            state=state,
            at=time.time(),
            **kw,
        )
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
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()


@contextlib.asynccontextmanager
async def scheduler_running(config: SchedulerConfig) -> AsyncIterator[None]:
    """A real scheduler (``run_scheduler``) in this process from ready until the block ends,
    then stopped and waited for."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_scheduler(config, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
