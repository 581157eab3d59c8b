"""The whole agent against a real broker, with the test acting as a minimal scheduler."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from agent_builders import Reports, agent, spec, stream_batches, upload_snapshot

from sortie.bus.blobs import has_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState

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
            codec.decode(m.LogBatch, d)
            for d in await stream_batches(bus.js, subjects.run_logs("run1"))
        ]
        lines = [(ln.stream, ln.text) for b in batches for ln in b.lines]
        assert all(b.run_id == "run1" and b.attempt == 1 and not b.eof for b in batches)
        assert ("stdout", "hello from run1 attempt 1") in lines
        assert ("stderr", "to stderr") in lines
        assert any(s == "system" and t.startswith("snapshot ") for s, t in lines)
        assert any(s == "system" and "exited with code 0" in t for s, t in lines)
        metrics = [
            p
            for d in await stream_batches(bus.js, subjects.run_metrics("run1"))
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
    # the run writes only its own working directory (agents.isolation)
    pidfile = tmp_path / "agent" / "runs" / "held" / "1" / "pid"
    snap = await upload_snapshot(
        bus,
        {
            "train.py": (
                b"import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
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
