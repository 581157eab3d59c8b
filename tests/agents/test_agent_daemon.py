"""The whole agent against a real broker, with the test acting as a minimal scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import pytest
from agent_builders import upload_snapshot
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agents.config import AgentConfig
from agents.daemon import run_agent
from proto import codec, subjects
from proto import messages as m
from proto.states import TERMINAL, RunState
from sortie.bus import Bus, has_blob, sha256_bytes

TRAIN = b"""\
import os, sys
from sortie import Run
run = Run.get_context()
print("hello from", run.id, "attempt", run.attempt)
print("to stderr", file=sys.stderr)
run.log("acc", 0.9)
with open(os.path.join(os.environ["SORTIE_OUTPUTS_DIR"], "model.txt"), "w") as fh:
    fh.write("weights")
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/sub/log.json", "w") as fh:
    fh.write("{}")
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


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

    async def send(self, cmd: m.Assign | m.Cancel | bytes) -> None:
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
            msgs = await self.sub.fetch(100, timeout=timeout)  # type: ignore[attr-defined]
        except (nats.errors.TimeoutError, TimeoutError):
            return
        for msg in msgs:
            report = codec.decode(m.RunReport, msg.data)
            self.by_run.setdefault(report.run_id, []).append(report)
            await msg.ack()

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()  # type: ignore[attr-defined]
            self.sub = None

    async def until_terminal(self, run_id: str, timeout: float = 30.0) -> list[m.RunReport]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.by_run.get(run_id, [])
            if got and got[-1].state in TERMINAL:
                return got
            await self.pull()
        raise AssertionError(f"no terminal report for {run_id}: {self.by_run.get(run_id)}")

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
async def agent(bus: Bus, tmp_path: Path) -> AsyncIterator[FakeScheduler]:
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
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop))
    try:
        yield sched
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sub.unsubscribe()


def spec(snapshot_id: str, **kw: object) -> m.RunSpec:
    return m.RunSpec(experiment="exp", script="train.py", snapshot_id=snapshot_id, **kw)  # type: ignore[arg-type]


async def test_full_agent_run(bus: Bus, tmp_path: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAIN, 0o644)})
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        hb = sched.heartbeats[-1]
        assert hb.target == "local" and hb.capacity.cpus >= 1 and hb.capacity.memory_mb > 0

        # undecodable bytes on the command subject are ignored
        await sched.send(b"\x00not json")
        await sched.send(b'{"type": "assign", "run_id": 5}')

        assign = m.Assign(run_id="run1", attempt=1, incarnation=inc, spec=spec(snap))
        await sched.send(assign)
        got = await reports.until_terminal("run1")
        assert [r.state for r in got] == [
            RunState.STARTING,
            RunState.RUNNING,
            RunState.FINALIZING,
            RunState.COMPLETED,
        ]
        final = got[-1]
        assert final.exit_code == 0 and final.error is None
        assert final.agent_id == "local-test" and final.incarnation == inc
        assert {a.path for a in final.artifacts} == {"outputs/model.txt", "outputs/sub/log.json"}
        model = next(a for a in final.artifacts if a.path == "outputs/model.txt")
        assert model.sha256 == sha256_bytes(b"weights") and model.size == 7
        for a in final.artifacts:
            assert await has_blob(bus.blobs, a.sha256)

        # logs are all in SORTIE_LOGS (the terminal report came after their acks)
        batches = [
            codec.decode(m.LogBatch, d) for d in await stream_batches(bus.js, subjects.logs("run1"))
        ]
        lines = [(ln.stream, ln.text) for b in batches for ln in b.lines]
        assert all(b.run_id == "run1" and b.attempt == 1 and not b.eof for b in batches)
        assert ("stdout", "hello from run1 attempt 1") in lines
        assert ("stderr", "to stderr") in lines
        assert any(s == "system" and t.startswith("snapshot ") for s, t in lines)
        assert any(s == "system" and "exited with code 0" in t for s, t in lines)
        metrics = [
            p
            for d in await stream_batches(bus.js, subjects.metrics("run1"))
            for p in codec.decode(m.MetricBatch, d).points
        ]
        assert [(p.name, p.value) for p in metrics] == [("acc", 0.9)]

        # a resend of the same assignment and a stale-incarnation one are ignored
        await sched.send(assign)
        await sched.send(
            m.Assign(run_id="run9", attempt=1, incarnation="someone-else", spec=spec(snap))
        )
        await asyncio.sleep(1.0)
        await reports.pull()
        assert len(reports.by_run["run1"]) == 4
        assert "run9" not in reports.by_run
        hb = sched.heartbeats[-1]
        assert m.RunRef(run_id="run1", attempt=1) in hb.finished
        assert hb.running == []

        # still alive after the garbage: a failing script reports Failed with its exit code
        await sched.send(
            m.Assign(run_id="run2", attempt=1, incarnation=inc, spec=spec(snap, arguments=["3"]))
        )
        got2 = await reports.until_terminal("run2")
        assert got2[-1].state == RunState.FAILED and got2[-1].exit_code == 3
        assert got2[-1].error == m.RunError(kind="exit_code", message="script exited with code 3")
    await reports.close()


async def test_cancel_and_pre_spawn_failures(bus: Bus, tmp_path: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(
        bus, {"train.py": (b"import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n", 0o644)}
    )
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        await sched.send(m.Assign(run_id="long", attempt=1, incarnation=inc, spec=spec(snap)))
        await reports.until_state("long", RunState.RUNNING)
        deadline = time.monotonic() + 5
        while m.RunRef(run_id="long", attempt=1) not in sched.heartbeats[-1].running:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await sched.send(m.Cancel(run_id="long", attempt=1, reason="canceled"))
        got = await reports.until_terminal("long")
        assert [r.state for r in got][-2:] == [RunState.FINALIZING, RunState.CANCELED]

        # a newer attempt of a running run stops the old one without a report for it
        await sched.send(m.Assign(run_id="re", attempt=1, incarnation=inc, spec=spec(snap)))
        await reports.until_state("re", RunState.RUNNING)
        await sched.send(m.Assign(run_id="re", attempt=2, incarnation=inc, spec=spec(snap)))
        deadline = time.monotonic() + 10
        while True:
            await reports.pull()
            if any(r.attempt == 2 and r.state == RunState.RUNNING for r in reports.by_run["re"]):
                break
            assert time.monotonic() < deadline
        assert [r.state for r in reports.by_run["re"] if r.attempt == 1] == [
            RunState.STARTING,
            RunState.RUNNING,
        ]
        await sched.send(m.Cancel(run_id="re", attempt=2, reason="canceled"))
        got = await reports.until_terminal("re")
        assert got[-1].attempt == 2 and got[-1].state == RunState.CANCELED

        # failures before the spawn go straight to Failed
        bad_env = m.Environment(python=m.PythonEnvironment(interpreter="/nope/python"))
        await sched.send(
            m.Assign(
                run_id="badenv", attempt=1, incarnation=inc, spec=spec(snap, environment=bad_env)
            )
        )
        got = await reports.until_terminal("badenv")
        assert [r.state for r in got] == [RunState.FAILED]
        assert got[-1].error is not None and got[-1].error.kind == "environment"

        await sched.send(m.Assign(run_id="nosnap", attempt=1, incarnation=inc, spec=spec("0" * 64)))
        got = await reports.until_terminal("nosnap")
        assert [r.state for r in got] == [RunState.FAILED]
        assert got[-1].error is not None and got[-1].error.kind == "snapshot"

        await sched.send(
            m.Assign(
                run_id="timeout",
                attempt=1,
                incarnation=inc,
                spec=spec(snap, max_duration_s=0.5),
            )
        )
        got = await reports.until_terminal("timeout")
        assert got[-1].state == RunState.FAILED
        assert got[-1].error is not None and got[-1].error.kind == "timeout"
        assert "max_duration_s=0.5" in got[-1].error.message
    await reports.close()


@pytest.mark.parametrize("grace", [2.0])
async def test_shutdown_stops_running_attempts(bus: Bus, tmp_path: Path, grace: float) -> None:
    reports = Reports(bus.js)
    await reports.open()
    pidfile = tmp_path / "pid"
    snap = await upload_snapshot(
        bus,
        {
            "train.py": (
                f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                "time.sleep(60)\n".encode(),
                0o644,
            )
        },
    )
    t0 = 0.0
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        await sched.send(m.Assign(run_id="held", attempt=1, incarnation=inc, spec=spec(snap)))
        await reports.until_state("held", RunState.RUNNING)
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < grace + 5
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # shutdown is not a terminal state of the run: the scheduler requeues it when the agent
    # is gone, so no report after Running
    await reports.pull()
    assert [r.state for r in reports.by_run["held"]] == [RunState.STARTING, RunState.RUNNING]
    await reports.close()
