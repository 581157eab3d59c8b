"""A sweep's metric -> stop latency, and a large sweep end to end, on simulated agents.

A real nats-server (fsync on) and the real scheduler as its own process (``sortie
scheduler``, from ``tests/faults.py``'s ``Cluster``); ``--agents`` simulated agents
(``tests.harness.FakeAgent``: the real protocol, no executor) run the trials: on an Assign a
trial reports Starting and Running, then publishes one point of the primary metric per
interval exactly as an agent does (a ``MetricBatch`` on its metrics subject, acked by
JetStream), ``--pause`` seconds apart, and reports Completed after ``--points`` of them; on a
Cancel it reports Canceled at once. Its metric is ``x * i / points`` (``--x`` is the trial's
parameter), so a Bandit policy stops the trials whose ``x`` is poor.

Latency: from the publish (acked) of the point after which the policy stopped a trial to the
Cancel reaching its agent, for every trial the policy stopped (valid while below ``--pause``,
which is checked). Also: trials per second through the whole sweep (submitted, placed,
reported, metrics fed, stopped or completed, the sweep ended).

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.sweep_latency [--trials 200] [--concurrency 20]
        [--agents 10] [--points 6] [--pause 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sortie.bus.connection import Bus, open_bus
from sortie.client.client import Client
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from tests.faults import Cluster
from tests.harness import FakeAgent


class Trials:
    """Simulated trials on the fake agents: what each published last, and when its Cancel
    came."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.last_publish: dict[str, float] = {}
        self.latencies: list[float] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def serve(self, agent: FakeAgent) -> None:
        while True:
            cmd = await agent.commands.get()
            if isinstance(cmd, m.Assign):
                self.tasks[cmd.run_id] = asyncio.create_task(self._trial(agent, cmd))
            elif cmd.reason == "canceled":
                at = time.perf_counter()
                task = self.tasks.get(cmd.run_id)
                if task is not None and not task.done():
                    task.cancel()
                    self.latencies.append(at - self.last_publish.get(cmd.run_id, at))
                    err = m.RunError(kind=ErrorKind.CANCELED, message="canceled")
                    await agent.report(cmd.run_id, cmd.attempt, RunState.CANCELED, error=err)

    async def _trial(self, agent: FakeAgent, a: m.Assign) -> None:
        x = float(a.spec.arguments[a.spec.arguments.index("--x") + 1])
        await agent.report(a.run_id, a.attempt, RunState.STARTING)
        await agent.report(a.run_id, a.attempt, RunState.RUNNING)
        subject = subjects.metrics(a.run_id, agent.agent_id)
        points = self.args.points
        for i in range(1, points + 1):
            point = m.MetricPoint(name="acc", value=x * i / points, t=time.time(), step=i)
            batch = m.MetricBatch(run_id=a.run_id, attempt=a.attempt, points=[point])
            await agent.bus.js.publish(subject, codec.encode(batch))
            self.last_publish[a.run_id] = time.perf_counter()
            await asyncio.sleep(self.args.pause)
        await agent.report(a.run_id, a.attempt, RunState.COMPLETED, exit_code=0)


def sweep_spec(args: argparse.Namespace) -> sw.SweepSpec:
    return sw.SweepSpec(
        space={"x": sw.Uniform(min_value=0.0, max_value=1.0)},
        sampling=sw.RandomSampling(seed=1),
        policy=sw.Bandit(slack_factor=0.2, evaluation_interval=1, delay_evaluation=1),
        primary_metric="acc",
        goal="maximize",
        max_total_trials=args.trials,
        max_concurrent_trials=args.concurrency,
    )


async def submit(url: str, root: Path, sweep: sw.SweepSpec) -> str:
    """The sweep through the client library (its snapshot: one small script)."""
    src = root / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text("print('simulated')\n")
    config = ScriptRunConfig(
        source_directory=src, script="train.py", run_config=RunConfiguration(target="sim")
    )
    async with await Client.connect(url, name="bench-sweep") as client:
        return (await client.submit(config, sweep=sweep)).run_id


async def wait_ended(bus: Bus, run_id: str, limit_s: float) -> m.RunRecord:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        entry = await bus.runs.get(run_id)
        rec = codec.decode(m.RunRecord, entry.value or b"")
        if rec.state in TERMINAL:
            return rec
        await asyncio.sleep(0.2)
    raise SystemExit(f"sweep {run_id} not ended within {limit_s:.0f}s")


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = Cluster(root / "c")
    cluster.start_broker()
    cluster.start_scheduler()
    try:
        bus = await open_bus(cluster.url, "bench-sweep", create=True)
        trials = Trials(args)
        per_agent = -(-args.concurrency // args.agents)
        agents = [
            FakeAgent(
                bus,
                f"sim-{i}",
                target="sim",
                capacity=m.Capacity(cpus=per_agent, memory_mb=per_agent * 1024),
            )
            for i in range(args.agents)
        ]
        for a in agents:
            await a.start()
        serving = [asyncio.create_task(trials.serve(a)) for a in agents]
        await asyncio.sleep(2.0)  # heartbeats seen: the target exists
        t0 = time.perf_counter()
        sweep_id = await submit(cluster.url, root, sweep_spec(args))
        rec = await wait_ended(bus, sweep_id, args.timeout)
        wall = time.perf_counter() - t0
        for t in serving:
            t.cancel()
        for a in agents:
            await a.stop()
        await bus.close()
    finally:
        cluster.close()
    lat = sorted(trials.latencies)
    assert rec.sweep is not None
    return {
        "trials": rec.sweep.issued,
        "state": str(rec.state),
        "ended_because": rec.sweep.ended_because,
        "stopped_by_policy": len(lat),
        "wall_s": round(wall, 2),
        "trials_per_s": round(rec.sweep.issued / wall, 2),
        "stop_latency_p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "stop_latency_p95_ms": round(lat[int(0.95 * (len(lat) - 1))] * 1000, 1) if lat else None,
        "stop_latency_max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "pause_s": args.pause,
        "concurrency": args.concurrency,
        "agents": args.agents,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--points", type=int, default=6)
    p.add_argument("--pause", type=float, default=0.8)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-sweep-bench-") as tmp:
        out = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(out))
    print(
        f"{out['trials']} trials in {out['wall_s']} s ({out['trials_per_s']}/s), "
        f"{out['stopped_by_policy']} stopped by Bandit; metric -> stop p50 "
        f"{out['stop_latency_p50_ms']} ms, p95 {out['stop_latency_p95_ms']} ms "
        f"(load {out['load_avg_1m']} on {out['cpus']} CPUs)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
