"""The pipeline controller's overhead: ``scheduler.pipelines.controller.pipeline_step`` alone,
no broker, no I/O.

- **Fan-out**: a ``--steps``-step pipeline (200): 1 prep -> ``steps - 2`` parallel steps ->
  1 join, on simulated runs (``tests/scheduler/pipelines/builders.py``'s ``SimPipeline``: a
  submitted run completes when the simulation says, storing its outputs). Driven two ways:
  every running run ends between calls (a call per wave), and one run ends per call (the
  scheduler's worst case: a call per run state change, each over the whole pipeline). Time
  spent in ``pipeline_step`` per step and per call (mean, p99).
- **Reused chain**: a ``--chain``-step chain (20) run once to fill the step cache, then
  submitted again: every step is reused and the pipeline is done in ONE call. The time of that
  call (median of ``--repeat``, 50), and per step.

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.pipelines [--steps 200] [--chain 20] [--repeat 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from sortie.proto.pipelines import CachedStep, PipelineSpec, StepState
from sortie.proto.states import RunState
from sortie.scheduler.pipelines.controller import PipelinePlan, pipeline_step
from tests.scheduler.pipelines.builders import SimPipeline, pipeline, step


class Timed(SimPipeline):
    """The simulated pipeline, timing each ``pipeline_step``."""

    times: list[float]

    def decide(self, *args: Any) -> PipelinePlan:
        t = time.perf_counter()
        out = super().decide(*args)
        self.times.append(time.perf_counter() - t)
        return out


def fan_out(steps: int) -> PipelineSpec:
    width = steps - 2
    return pipeline(
        step("prep", [], ["p"]),
        *(step(f"w{i}", ["p"], [f"o{i}"]) for i in range(width)),
        step("join", [f"o{i}" for i in range(width)]),
    )


def chain(steps: int) -> PipelineSpec:
    return pipeline(*(step(f"s{i}", [f"d{i - 1}"] if i else [], [f"d{i}"]) for i in range(steps)))


def measure_fan_out(steps: int, *, one_at_a_time: bool) -> dict[str, Any]:
    sim = Timed(fan_out(steps))
    sim.times = []
    plan = sim.run(one_at_a_time=one_at_a_time, calls=10 * steps)
    assert plan.done is RunState.COMPLETED, plan
    total = sum(sim.times)
    ordered = sorted(sim.times)
    return {
        "pipeline": f"fan-out {steps}",
        "ends_per_call": "one" if one_at_a_time else "all running",
        "steps": steps,
        "calls": len(sim.times),
        "seconds_in_pipeline_step": round(total, 4),
        "ms_per_step": round(total / steps * 1000, 4),
        "ms_per_call_mean": round(statistics.fmean(sim.times) * 1000, 4),
        "ms_per_call_p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 4),
    }


def measure_reused_chain(steps: int, repeat: int) -> dict[str, Any]:
    first = SimPipeline(chain(steps))
    first.run()
    times = []
    for i in range(repeat):
        again = SimPipeline(first.spec, cache=dict(first.cache), run_id=f"again{i}")
        view = again.current()
        cached = {k: v for k, v in again.cache.items() if isinstance(v, CachedStep)}
        t = time.perf_counter()
        plan = pipeline_step(view, {}, cached, {})
        times.append(time.perf_counter() - t)
        assert plan.done is RunState.COMPLETED and plan.submit == [], plan
        assert all(s.state is StepState.REUSED for s in plan.statuses.values())
    median = statistics.median(times)
    return {
        "pipeline": f"chain {steps}, every step reused",
        "steps": steps,
        "calls_to_done": 1,
        "ms_median": round(median * 1000, 4),
        "ms_max": round(max(times) * 1000, 4),
        "ms_per_step": round(median / steps * 1000, 4),
    }


def main() -> int:
    args = _parse_args()
    result = {
        "fan_out": [
            measure_fan_out(args.steps, one_at_a_time=False),
            measure_fan_out(args.steps, one_at_a_time=True),
        ],
        "reused_chain": measure_reused_chain(args.chain, args.repeat),
    }
    print(json.dumps(result, indent=2))
    _print_summary(result)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--chain", type=int, default=20)
    p.add_argument("--repeat", type=int, default=50)
    return p.parse_args()


def _print_summary(result: dict[str, Any]) -> None:
    print(
        f"{'pipeline':<16} {'ends per call':<13} {'calls':>5} {'ms/step':>8} {'ms/call':>8}"
        f" {'p99 ms':>8}",
        file=sys.stderr,
    )
    for r in result["fan_out"]:
        print(
            f"{r['pipeline']:<16} {r['ends_per_call']:<13} {r['calls']:>5} {r['ms_per_step']:>8}"
            f" {r['ms_per_call_mean']:>8} {r['ms_per_call_p99']:>8}",
            file=sys.stderr,
        )
    c = result["reused_chain"]
    print(
        f"{c['pipeline']}: done in 1 call, {c['ms_median']} ms (median; max {c['ms_max']}),"
        f" {c['ms_per_step']} ms/step",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
