"""The whole agent with fake GPUs, labels, priority, preemption and stop reasons.

GPUs: the agent's ``gpu_probe`` is given a fake device list (eight H100s named as the real one
recorded in ``data/``); everything else is real: broker, processes, reports, logs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from agent_builders import Reports, agent, spec, stream_batches, upload_snapshot

from sortie.agents.config import AgentConfig
from sortie.agents.daemon import run_agent
from sortie.agents.gpus import GpuConfigError
from sortie.agents.isolation import ENV_RUN_WRITABLE
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState

H100 = "NVIDIA H100 80GB HBM3"

# argv: READY_FILE [GO_FILE] [ignore]. Says what it sees, then waits for GO_FILE (or forever).
# On SIGTERM it prints the stop reason; it exits unless told to ignore SIGTERM.
TRAP = b"""\
import os, signal, sys, time
from sortie import Run
run = Run.get_context()
ignore = sys.argv[-1] == "ignore"
def on_term(signum, frame):
    print("stop reason:", run.stop_reason(), flush=True)
    if not ignore:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("cvd:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
print("priority:", os.environ["SORTIE_NODE_PRIORITY"], flush=True)
print("reason before:", run.stop_reason(), flush=True)
open(sys.argv[1], "w").write("ready")
go = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "ignore" else None
while not (go and os.path.exists(go)):
    time.sleep(0.05)
"""


class FakeGpus:
    """A probe for ``n`` H100s whose memory readings change on every call."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self) -> list[m.GpuDevice]:
        self.calls += 1
        return [
            m.GpuDevice(
                index=i,
                name=H100,
                uuid=f"GPU-fake-{i}",
                memory_total_mb=81559,
                memory_used_mb=self.calls,
                utilization_pct=0,
            )
            for i in range(self.n)
        ]


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def wait_files(paths: list[Path], timeout: float = 20.0) -> None:
    await eventually(lambda: all(p.exists() for p in paths), timeout)


async def log_texts(bus: Bus, run_id: str) -> list[str]:
    return [
        ln.text
        for d in await stream_batches(bus.js, subjects.run_logs(run_id))
        for ln in codec.decode(m.LogBatch, d).lines
    ]


def assign(
    inc: str, run_id: str, snap: str, *args: str, attempt: int = 1, **kw: object
) -> m.Assign:
    return m.Assign(
        run_id=run_id,
        attempt=attempt,
        incarnation=inc,
        spec=spec(snap, arguments=list(args), **kw),
    )


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the scripts leave their marks: a dir the agent lets every run write
    (SORTIE_RUN_WRITABLE); a run may write nothing else outside its own."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    monkeypatch.setenv(ENV_RUN_WRITABLE, str(d))
    return d


async def test_each_run_gets_exactly_its_gpus(bus: Bus, tmp_path: Path, shared: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAP, 0o644)})
    go = shared / "go"
    probe = FakeGpus(8)
    async with agent(
        bus,
        tmp_path,
        gpu_probe=probe,
        gpu_refresh_s=0.2,
        labels={"zone": "a", "disk": "ssd"},
        priority="lowpriority",
    ) as sched:
        inc = await sched.incarnation()
        hb = sched.heartbeats[-1]
        assert hb.capacity.gpus == 8 and hb.capacity.gpu_type == H100
        assert [g.index for g in hb.gpus] == list(range(8))
        assert hb.labels == {"zone": "a", "disk": "ssd"} and hb.priority == "lowpriority"
        assert not hb.preempting

        one_gpu = m.Resources(gpus=1, gpu_type="h100")
        readies = [shared / f"ready{i}" for i in range(8)]
        for i in range(8):
            await sched.send(
                assign(inc, f"g{i}", snap, str(readies[i]), str(go), resources=one_gpu)
            )
        await wait_files(readies)
        for i in range(8):
            await reports.until_state(f"g{i}", RunState.RUNNING)

        # all eight side by side, each GPU given to one run, as the heartbeat says
        await eventually(lambda: all(g.run_id for g in sched.heartbeats[-1].gpus))
        holders = {g.index: g.run_id for g in sched.heartbeats[-1].gpus}
        assert sorted(holders.values()) == [f"g{i}" for i in range(8)]
        # readings are refreshed while the set of GPUs stays the same
        used = sched.heartbeats[-1].gpus[0].memory_used_mb
        await eventually(lambda: sched.heartbeats[-1].gpus[0].memory_used_mb > used)
        assert [g.index for g in sched.heartbeats[-1].gpus] == list(range(8))

        # no GPU left: a ninth run fails to start (the scheduler should not have sent it)
        await sched.send(assign(inc, "g8", snap, str(shared / "r8"), str(go), resources=one_gpu))
        got = await reports.until_terminal("g8")
        assert [r.state for r in got] == [RunState.FAILED]
        assert got[-1].error is not None and got[-1].error.kind == "start"
        assert "needs 1 GPUs but only 0 of this agent's 8 are free" in got[-1].error.message

        # a GPU type this agent does not have: refused before anything is prepared
        await sched.send(
            assign(inc, "a100", snap, "x", resources=m.Resources(gpus=1, gpu_type="A100"))
        )
        got = await reports.until_terminal("a100")
        assert [r.state for r in got] == [RunState.FAILED]
        assert got[-1].error is not None and got[-1].error.kind == "start"
        assert "'A100'" in got[-1].error.message and H100 in got[-1].error.message

        go.write_text("go")
        for i in range(8):
            final = await reports.until_terminal(f"g{i}")
            assert final[-1].state == RunState.COMPLETED
        seen = set()
        for i in range(8):
            texts = await log_texts(bus, f"g{i}")
            cvd = next(t for t in texts if t.startswith("cvd: "))
            assert cvd == f"cvd: '{holders_of(holders, f'g{i}')}'"
            seen.add(cvd)
            assert "priority: lowpriority" in texts
            assert "reason before: None" in texts
        assert len(seen) == 8  # each saw a distinct single GPU

        # GPUs are given back when runs end; a run without GPUs sees none
        await eventually(lambda: not any(g.run_id for g in sched.heartbeats[-1].gpus))
        await sched.send(assign(inc, "nogpu", snap, str(shared / "r9"), str(go)))
        assert (await reports.until_terminal("nogpu"))[-1].state == RunState.COMPLETED
        assert "cvd: ''" in await log_texts(bus, "nogpu")
    await reports.close()


def holders_of(holders: dict[int, str | None], run_id: str) -> str:
    return ",".join(str(i) for i, r in sorted(holders.items()) if r == run_id)


async def test_gpu_indices_split_a_host(bus: Bus, tmp_path: Path, shared: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAP, 0o644)})
    go = shared / "go"
    go.write_text("go")
    async with agent(bus, tmp_path, gpu_probe=FakeGpus(8), gpu_indices=[5, 2]) as sched:
        inc = await sched.incarnation()
        hb = sched.heartbeats[-1]
        assert hb.capacity.gpus == 2 and [g.index for g in hb.gpus] == [2, 5]
        assert hb.labels == {} and hb.priority == "dedicated"
        await sched.send(
            assign(inc, "two", snap, str(shared / "r"), str(go), resources=m.Resources(gpus=2))
        )
        assert (await reports.until_terminal("two"))[-1].state == RunState.COMPLETED
        assert "cvd: '2,5'" in await log_texts(bus, "two")
        assert "priority: dedicated" in await log_texts(bus, "two")
    await reports.close()

    # an index the host does not have: a clear error at start, before anything else
    config = AgentConfig(
        url=bus.url, agent_id="bad-gpus", target="local", data_dir=tmp_path / "b", gpu_indices=[9]
    )
    with pytest.raises(GpuConfigError, match=r"GPU indices \[9\] are not on this host"):
        await asyncio.wait_for(run_agent(config, asyncio.Event(), gpu_probe=FakeGpus(8)), 10)
    # no GPUs at all (neither NVML nor nvidia-smi): an agent without GPUs, no error
    async with agent(bus, tmp_path, gpu_probe=list) as sched:
        await sched.incarnation()
        assert sched.heartbeats[-1].gpus == [] and sched.heartbeats[-1].capacity.gpus == 0


async def test_preempt_stops_everything_and_requeues(
    bus: Bus, tmp_path: Path, shared: Path
) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAP, 0o644)})
    grace = 1.0
    async with agent(
        bus, tmp_path, gpu_probe=FakeGpus(2), preempt_grace_s=grace, priority="lowpriority"
    ) as sched:
        inc = await sched.incarnation()
        ready = {name: shared / f"ready-{name}" for name in ("polite", "stubborn", "old")}
        await sched.send(
            assign(inc, "polite", snap, str(ready["polite"]), resources=m.Resources(gpus=1))
        )
        await sched.send(assign(inc, "stubborn", snap, str(ready["stubborn"]), "ignore"))
        await sched.send(assign(inc, "pre", snap, str(ready["old"]), "ignore"))
        await wait_files(list(ready.values()))
        for run_id in ("polite", "stubborn", "pre"):
            await reports.until_state(run_id, RunState.RUNNING)
        # "pre" attempt 2 waits (still preparing) while attempt 1 ignores its stale stop
        await sched.send(assign(inc, "pre", snap, "x", attempt=2))
        await asyncio.sleep(0.3)

        t0 = time.monotonic()
        await sched.send(m.Preempt())
        await eventually(lambda: sched.heartbeats[-1].preempting)
        # no new runs on a node being preempted
        await sched.send(assign(inc, "late", snap, str(shared / "late")))

        preempted = m.RunError(
            kind="preempted", message="node was preempted (low-priority); the run will be requeued"
        )
        for run_id in ("polite", "stubborn"):
            await reports.until_state(run_id, RunState.QUEUED)
            got = reports.by_run[run_id]
            assert [r.state for r in got] == [RunState.STARTING, RunState.RUNNING, RunState.QUEUED]
            assert got[-1].error == preempted and got[-1].attempt == 1
            texts = await log_texts(bus, run_id)
            assert "stop reason: preempted" in texts
            # logs were flushed before the report: the last line says why
            assert texts[-1] == f"Queued: {preempted.message}"
        # the stubborn one ignored SIGTERM and was killed after the preemption grace
        assert time.monotonic() - t0 >= grace
        await reports.until_state("pre", RunState.QUEUED)
        pre = reports.by_run["pre"]
        assert [(r.attempt, r.state) for r in pre] == [
            (1, RunState.STARTING),
            (1, RunState.RUNNING),
            (2, RunState.QUEUED),  # attempt 1 was stale: no report for it
        ]
        assert pre[-1].error == preempted

        await asyncio.sleep(0.5)
        await reports.pull()
        assert "late" not in reports.by_run
        hb = sched.heartbeats[-1]
        assert hb.preempting and hb.running == [] and hb.priority == "lowpriority"
        assert not any(g.run_id for g in hb.gpus)
        assert m.RunRef(run_id="polite", attempt=1) in hb.finished
        assert m.RunRef(run_id="late", attempt=1) not in hb.finished
    await reports.close()


async def test_stop_reason_for_cancel_and_timeout(bus: Bus, tmp_path: Path, shared: Path) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAP, 0o644)})
    async with agent(bus, tmp_path) as sched:
        inc = await sched.incarnation()
        ready = shared / "ready-c"
        await sched.send(assign(inc, "c", snap, str(ready)))
        await wait_files([ready])
        await reports.until_state("c", RunState.RUNNING)
        await sched.send(m.Cancel(run_id="c", attempt=1))
        got = await reports.until_terminal("c")
        assert got[-1].state == RunState.CANCELED
        texts = await log_texts(bus, "c")
        assert "stop reason: canceled" in texts and "reason before: None" in texts

        await sched.send(assign(inc, "t", snap, str(shared / "ready-t"), max_duration_s=3.0))
        got = await reports.until_terminal("t")
        assert got[-1].state == RunState.FAILED
        assert got[-1].error is not None and got[-1].error.kind == "timeout"
        assert "stop reason: timeout" in await log_texts(bus, "t")
    await reports.close()
