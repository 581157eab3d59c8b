"""Builders shared by the agent tests: snapshots, a real agent, a minimal fake scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from sortie.agents.config import AgentConfig
from sortie.agents.daemon import run_agent
from sortie.agents.gpus import GpuProbe, probe_gpus
from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState


async def upload_snapshot(bus: Bus, files: dict[str, tuple[bytes, int]]) -> str:
    """Upload file blobs and their manifest; return the snapshot id."""
    entries = []
    for path, (data, mode) in files.items():
        sha = sha256_bytes(data)
        await put_blob(bus.blobs, sha, data)
        entries.append(m.FileEntry(path=path, size=len(data), mode=mode, sha256=sha))
    manifest = codec.encode(m.Manifest(files=entries))
    snapshot_id = sha256_bytes(manifest)
    await put_blob(bus.blobs, snapshot_id, manifest)
    return snapshot_id


async def upload_manifest(bus: Bus, manifest: m.Manifest) -> str:
    data = codec.encode(manifest)
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    return sha


@dataclass
class FakeScheduler:
    bus: Bus
    agent_id: str
    heartbeats: list[m.Heartbeat] = field(default_factory=list)

    async def on_heartbeat(self, msg: Msg) -> None:
        self.heartbeats.append(codec.decode(m.Heartbeat, msg.data))

    async def incarnation(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.heartbeats:
            assert time.monotonic() < deadline, "no heartbeat from the agent"
            await asyncio.sleep(0.05)
        return self.heartbeats[-1].incarnation

    async def send(self, cmd: m.Assign | m.Cancel | m.Preempt | bytes) -> None:
        data = cmd if isinstance(cmd, bytes) else codec.encode(cmd)
        await self.bus.nc.publish(subjects.agent_commands(self.agent_id), data)
        await self.bus.nc.flush()


class Reports:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.by_run: dict[str, list[m.RunReport]] = {}
        self.sub: object = None

    async def open(self) -> None:
        self.sub = await self.js.pull_subscribe(subjects.REPORTS_ALL, durable="fake-scheduler")

    async def pull(self, timeout: float = 0.5) -> None:
        assert self.sub is not None
        try:
            msgs = await self.sub.fetch(100, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return
        for msg in msgs:
            report = codec.decode(m.RunReport, msg.data)
            self.by_run.setdefault(report.run_id, []).append(report)
            await msg.ack()

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None

    async def until_terminal(self, run_id: str, timeout: float = 30.0) -> list[m.RunReport]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.by_run.get(run_id, [])
            if got and got[-1].state in TERMINAL:
                return got
            await self.pull()
        raise AssertionError(f"no terminal report for {run_id}: {self.by_run.get(run_id)}")

    async def until_terminal_or(
        self, state: RunState, run_id: str, timeout: float = 30.0
    ) -> m.RunReport:
        """The first report of ``run_id`` in ``state`` or a terminal state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.by_run.get(run_id, []):
                if r.state == state or r.state in TERMINAL:
                    return r
            await self.pull()
        raise AssertionError(f"{run_id} never reported {state}: {self.by_run.get(run_id)}")

    async def until_state(self, run_id: str, state: RunState, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.state == state for r in self.by_run.get(run_id, [])):
                return
            await self.pull()
        raise AssertionError(f"{run_id} never reported {state}: {self.by_run.get(run_id)}")


async def stream_batches(js: JetStreamContext, subject: str) -> list[bytes]:
    sub = await js.pull_subscribe(subject)
    out: list[bytes] = []
    while True:
        try:
            msgs = await sub.fetch(100, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        for msg in msgs:
            out.append(msg.data)
            await msg.ack()
    await sub.unsubscribe()
    return out


@contextlib.asynccontextmanager
async def agent(
    bus: Bus, tmp_path: Path, *, gpu_probe: GpuProbe = probe_gpus, **overrides: Any
) -> AsyncIterator[FakeScheduler]:
    """A real agent (``overrides``: AgentConfig fields; ``gpu_probe``: fake GPUs)."""
    agent_id = "local-test"
    sched = FakeScheduler(bus, agent_id)
    sub = await bus.nc.subscribe(subjects.heartbeat(agent_id), cb=sched.on_heartbeat)
    config = AgentConfig(
        url=bus.url,
        agent_id=agent_id,
        target="local",
        data_dir=tmp_path / "agent",
        heartbeat_interval_s=0.2,
        kill_grace_s=2.0,
    )
    config = dataclasses.replace(config, **overrides)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop, gpu_probe=gpu_probe))
    try:
        yield sched
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        with contextlib.suppress(nats.errors.Error):  # the test's link may have given up
            await sub.unsubscribe()


def spec(snapshot_id: str, **kw: object) -> m.RunSpec:
    return m.RunSpec(experiment="exp", script="train.py", snapshot_id=snapshot_id, **kw)
