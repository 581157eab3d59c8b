"""The pipeline controller's overhead per step through the real scheduler, on simulated agents.

A real nats-server (fsync on) and the real scheduler as its own process (``sortie
scheduler``, from ``tests/faults.py``'s ``Cluster``); ``--agents`` simulated agents
(``tests.harness.FakeAgent``: the real protocol, no executor) with room for every step of a
wave at once. On an Assign a step reports Starting and Running, then Completed after
``--work`` seconds, storing each of its outputs: every output is the same empty directory,
whose manifest is uploaded once before (the scheduler takes the ids an agent reports; no
files are written).

- **Pipeline**: a ``--steps``-step fan-out (200: 1 prep -> 198 parallel -> 1 join, linked by
  ``PipelineData``, as ``benchmarks/pipelines.py``'s) submitted through the client library
  (``submit_pipeline``); each round's steps take a ``--round`` argument of their own, so every
  step's key is new and nothing is reused. Timed: submit -> the pipeline run Completed, and
  each step's dispatch latency: from the completion report (the acked publish) of its last
  predecessor to its Assign reaching its agent (the 198 from prep's, the join from the last of
  the 198's), and submit -> prep's Assign.
- **Baseline**: ``--steps`` independent runs of the same script submitted at once
  (``Client.submit_request``, the snapshot already uploaded): from the submit's send to the
  run's Assign reaching its agent. What a step costs beyond a plain run is the difference.
- The scheduler's cycle time (its ``cycle`` log lines' ``ms``) during each phase.

``--rounds`` of each, alternated; the latencies pooled. Bounded: it gives up after
``--timeout`` seconds a phase.

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.pipeline_agents [--steps 200] [--rounds 3] [--work 1.0]
        [--agents 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from sortie.bus.connection import open_bus
from sortie.client import snapshot as snap
from sortie.client.client import Client
from sortie.client.pipeline_submit import PipelineOptions, StepConfig, submit_pipeline
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig, Source, run_spec
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import RunState
from tests.faults import Cluster
from tests.harness import FakeAgent

TARGET = "sim"


class Steps:
    """The simulated runs on the fake agents: when each Assign came, when each completion
    report was acked."""

    def __init__(self, work_s: float, output_id: str) -> None:
        self.work_s = work_s
        self.output_id = output_id
        self.assigned: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, agent: FakeAgent) -> None:
        while True:
            cmd = await agent.commands.get()
            if isinstance(cmd, m.Assign):
                self.assigned.setdefault(cmd.run_id, time.perf_counter())  # as it arrives
                task = asyncio.create_task(self._run(agent, cmd))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, agent: FakeAgent, a: m.Assign) -> None:
        await agent.report(a.run_id, a.attempt, RunState.STARTING)
        await agent.report(a.run_id, a.attempt, RunState.RUNNING)
        await asyncio.sleep(self.work_s)
        outputs = dict.fromkeys(a.spec.data_outputs, self.output_id)
        await agent.report(
            a.run_id, a.attempt, RunState.COMPLETED, exit_code=0, data_outputs=outputs
        )
        self.completed[a.run_id] = time.perf_counter()  # the publish is acked by now


def fan_out(src: Path, steps: int, round_: int) -> list[StepConfig]:
    def config(inputs: list[str], outputs: list[str]) -> ScriptRunConfig:
        arguments = [a for d in [*inputs, *outputs] for a in (f"--{d}", p.data_token(d))]
        return ScriptRunConfig(
            source_directory=src,
            script="step.py",
            arguments=[*arguments, "--round", str(round_)],
            run_config=RunConfiguration(target=TARGET),
        )

    width = steps - 2
    return [
        StepConfig(name="prep", config=config([], ["p"]), outputs=["p"]),
        *(
            StepConfig(
                name=f"w{i}", config=config(["p"], [f"o{i}"]), inputs=["p"], outputs=[f"o{i}"]
            )
            for i in range(width)
        ),
        StepConfig(
            name="join",
            config=config([], []),  # its inputs are in the graph; no arguments needed
            inputs=[f"o{i}" for i in range(width)],
        ),
    ]


class CycleLog:
    """The scheduler's ``cycle`` log lines (JSON: its stderr is a file) written since the last
    ``take``: one per cycle that changed something (``ms``, ``events``, ``placed``,
    ``changed``, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
        self.offset += len(data)
        out: list[dict[str, Any]] = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == "cycle":
                    out.append(entry)
        return out


@dataclass
class Samples:
    """What the rounds measured, pooled (seconds; cycle times in ms)."""

    walls: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)  # submit -> prep's Assign
    fan: list[float] = field(default_factory=list)
    joins: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    pipe_cycles: list[dict[str, Any]] = field(default_factory=list)
    base_cycles: list[dict[str, Any]] = field(default_factory=list)


async def pipeline_round(
    client: Client, steps: Steps, configs: list[StepConfig], args: argparse.Namespace, out: Samples
) -> None:
    t0 = time.perf_counter()
    sub = await submit_pipeline(
        client, f"fan-out-{args.steps}", configs, PipelineOptions(experiment="bench")
    )
    rec = await asyncio.wait_for(client.wait(sub.run_id), args.timeout)
    out.walls.append(time.perf_counter() - t0)
    if rec.state is not RunState.COMPLETED:
        raise SystemExit(f"pipeline {sub.run_id} ended {rec.state}: {rec.error}")
    assert rec.pipeline is not None
    states = {s.state for s in rec.pipeline.steps.values()}
    assert states == {p.StepState.COMPLETED}, states  # nothing reused: every step ran

    def rid(name: str) -> str:
        return p.step_run_id(sub.run_id, name)

    prep_done = steps.completed[rid("prep")]
    middle = [c.name for c in configs[1:-1]]
    out.firsts.append(steps.assigned[rid("prep")] - t0)
    out.fan += [steps.assigned[rid(w)] - prep_done for w in middle]
    out.joins.append(steps.assigned[rid("join")] - max(steps.completed[rid(w)] for w in middle))


async def baseline_round(
    client: Client, steps: Steps, spec: m.RunSpec, args: argparse.Namespace, out: Samples
) -> None:
    sent: dict[str, float] = {}

    async def one() -> None:
        request = m.SubmitRequest(
            spec=msgspec.structs.replace(spec, submission_id=uuid.uuid4().hex)
        )
        t = time.perf_counter()
        accepted = await client.submit_request(request)
        sent[accepted.run_id] = t

    await asyncio.gather(*(one() for _ in range(args.steps)))
    deadline = time.monotonic() + args.timeout
    while not all(r in steps.completed for r in sent):  # not a watcher per run meanwhile
        if time.monotonic() > deadline:
            raise SystemExit(f"baseline runs not completed within {args.timeout:.0f}s")
        await asyncio.sleep(0.05)
    ended = [await asyncio.wait_for(client.wait(r), args.timeout) for r in sent]
    bad = [r for r in ended if r.state is not RunState.COMPLETED]
    if bad:
        raise SystemExit(f"{len(bad)} baseline runs did not complete, e.g. {bad[0].state}")
    out.base += [steps.assigned[r] - t for r, t in sent.items()]


def summary(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    s = sorted(xs)
    return {
        "p50_ms": round(s[(len(s) - 1) // 2] * 1000, 1),
        "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1000, 1),
        "max_ms": round(s[-1] * 1000, 1),
    }


def cycle_summary(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95/max of the cycles' ``ms``, and what the longest one did."""
    longest = max(cycles, key=lambda c: float(c["ms"]), default={})
    what = {k: longest[k] for k in ("events", "placed", "ended", "changed") if k in longest}
    return {
        "n": len(cycles),
        **summary([float(c["ms"]) / 1000 for c in cycles]),
        "longest": what,
    }


async def uploaded(client: Client, directory: Path) -> tuple[str, snap.SnapshotPlan]:
    """A directory's manifest id, the directory uploaded."""
    plan = snap.build_manifest(directory)
    manifest_id, _ = snap.encode_manifest(plan.manifest)
    await client.upload_plan(plan)
    return manifest_id, plan


async def run_rounds(
    cluster: Cluster, client: Client, root: Path, args: argparse.Namespace
) -> Samples:
    src, empty = root / "src", root / "empty"
    src.mkdir()
    (src / "step.py").write_text("print('simulated')\n")
    empty.mkdir()
    output_id, _ = await uploaded(client, empty)
    snapshot_id, plan = await uploaded(client, src)
    source = Source(snapshot_id=snapshot_id, files=plan.files, bytes=plan.total_bytes, git=None)
    base_config = ScriptRunConfig(
        source_directory=src, script="step.py", run_config=RunConfiguration(target=TARGET)
    )
    base_spec = run_spec(base_config, source, experiment="bench", submission_id="")
    steps = Steps(args.work, output_id)
    bus = await open_bus(cluster.url, "bench-pipeline-agents")
    per_agent = -(-(args.steps - 2) // args.agents)
    capacity = m.Capacity(cpus=per_agent, memory_mb=per_agent * 1024)
    agents = [
        FakeAgent(bus, f"sim-{i}", target=TARGET, capacity=capacity) for i in range(args.agents)
    ]
    for a in agents:
        await a.start()
    serving = [asyncio.create_task(steps.serve(a)) for a in agents]
    out = Samples()
    try:
        await asyncio.sleep(2.0)  # heartbeats seen: the target exists
        cycles = CycleLog(cluster.root / "scheduler.log")
        cycles.take()
        for r in range(args.rounds):
            await pipeline_round(client, steps, fan_out(src, args.steps, r), args, out)
            out.pipe_cycles += cycles.take()
            await baseline_round(client, steps, base_spec, args, out)
            out.base_cycles += cycles.take()
    finally:
        for t in serving:
            t.cancel()
        for a in agents:
            await a.stop()
        await bus.close()
    return out


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = Cluster(root / "c")
    cluster.start_broker()
    cluster.start_scheduler()
    try:
        async with await cluster.client() as client:
            s = await run_rounds(cluster, client, root, args)
    finally:
        cluster.close()
    fan_s, base_s = summary(s.fan), summary(s.base)
    return {
        "steps": args.steps,
        "rounds": args.rounds,
        "work_s": args.work,
        "agents": args.agents,
        "pipeline_wall_s": [round(w, 2) for w in s.walls],
        # the floor: prep, the parallel steps and the join each take --work
        "pipeline_wall_floor_s": round(3 * args.work, 2),
        "submit_to_prep_assign_ms": [round(x * 1000, 1) for x in s.firsts],
        "fan_out_dispatch": {"n": len(s.fan), **fan_s},
        "join_dispatch_ms": [round(x * 1000, 1) for x in s.joins],
        "baseline_submit_to_assign": {"n": len(s.base), **base_s},
        "step_overhead_p50_ms": (
            round(fan_s["p50_ms"] - base_s["p50_ms"], 1)
            if fan_s["p50_ms"] is not None and base_s["p50_ms"] is not None
            else None
        ),
        "cycle_ms_pipeline": cycle_summary(s.pipe_cycles),
        "cycle_ms_baseline": cycle_summary(s.base_cycles),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=float, default=1.0, help="seconds a step runs")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=60, help="seconds a phase may take")
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps: at least 3 (prep, one parallel step, join)")
    with tempfile.TemporaryDirectory(prefix="sortie-pipeline-agents-") as tmp:
        out = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(out))
    fan, base = out["fan_out_dispatch"], out["baseline_submit_to_assign"]
    pc, bc = out["cycle_ms_pipeline"], out["cycle_ms_baseline"]
    print(
        f"fan-out {out['steps']} on {out['agents']} simulated agents, {out['rounds']} rounds, "
        f"steps of {out['work_s']} s (load {out['load_avg'][0]} on {out['cpus']} CPUs)\n"
        f"  submit -> Completed        {out['pipeline_wall_s']} s "
        f"(floor {out['pipeline_wall_floor_s']} s)\n"
        f"  submit -> prep Assign      {out['submit_to_prep_assign_ms']} ms\n"
        f"  prep done -> step Assign   p50 {fan['p50_ms']} ms, p95 {fan['p95_ms']} ms, "
        f"max {fan['max_ms']} ms (n {fan['n']})\n"
        f"  last done -> join Assign   {out['join_dispatch_ms']} ms\n"
        f"  baseline submit -> Assign  p50 {base['p50_ms']} ms, p95 {base['p95_ms']} ms, "
        f"max {base['max_ms']} ms (n {base['n']})\n"
        f"  a step beyond a run        p50 {out['step_overhead_p50_ms']} ms\n"
        f"  scheduler cycle            pipeline p50 {pc['p50_ms']} ms, max {pc['max_ms']} ms "
        f"(n {pc['n']}, the longest {pc['longest']});\n"
        f"                             baseline p50 {bc['p50_ms']} ms, max {bc['max_ms']} ms "
        f"(n {bc['n']}, the longest {bc['longest']})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
