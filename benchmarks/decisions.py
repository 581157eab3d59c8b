"""The decision code alone: placement decisions per second and packing quality.

The workload of ``benchmarks/workload.py`` (``--agents`` agents, ``--runs`` queued runs), no
I/O at all. Three measurements:

- **one pass**: ``scheduler.placement.place`` over the whole queue on an empty cluster, as
  the scheduler's first cycle after a big submit would: every queued run gets a decision
  (placed, or waiting with counted reasons); decisions/s = runs / seconds.
- **drain**: ``scheduler.core.decide`` (reconcile, capacity, placement, the record changes)
  cycle after cycle until every run has been placed, the runs placed by one cycle finishing
  before the next (their capacity is freed); placements/s = runs / seconds spent in
  ``decide``.
- **packing**: the first pass against an offline best-fit decreasing (the same filter and
  score, largest requests first, which an online queue in priority order cannot do): the
  share of CPUs and GPUs each allocates, their ratio, and the GPUs stranded by the online
  pass (free, while queued GPU runs wait, on agents whose CPUs or memory are used up).

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.decisions [--agents 1000] [--runs 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import msgspec

from benchmarks import workload
from sortie.proto import messages as m
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.placement import Plan, Slot, place
from sortie.scheduler.reconcile import Timing
from tests.sim import Sim, SimAgent


def empty_slots(agents: list[workload.Agent]) -> list[Slot]:
    return [
        Slot(
            agent_id=a.agent_id,
            target=workload.TARGET,
            free_cpus=a.capacity.cpus,
            free_memory_mb=a.capacity.memory_mb,
            free_gpus=a.capacity.gpus,
            total=a.capacity,
        )
        for a in agents
    ]


def one_pass(agents: list[workload.Agent], runs: list[m.RunRecord]) -> tuple[float, Plan]:
    slots = empty_slots(agents)
    t = time.perf_counter()
    plan = place(runs, slots)
    return time.perf_counter() - t, plan


def drain(agents: list[workload.Agent], runs: list[m.RunRecord]) -> dict[str, Any]:
    """``tests/sim.py``'s cycle over the whole queue: every agent heartbeats once, then
    decide until every run was placed; placed runs end at once (their capacity is free for
    the next cycle), so only the decision code is measured."""
    now = 2_000_000.0
    sim = Sim(
        agents=[
            SimAgent(agent_id=a.agent_id, capacity=a.capacity, target=workload.TARGET)
            for a in agents
        ],
        config=core.Config(timing=Timing(lease_s=1e9)),
        now=now,
        state=SchedulerState(started_at=now),
    )
    for agent in sim.agents:
        sim.heartbeat(agent)
    sim.enqueue(runs)
    cycles = placed = 0
    while sim.state.runs:
        cmds = sim.cycle()
        cycles += 1
        done = [c.run_id for c in cmds if isinstance(c, core.SendToAgent) and c.run_id]
        if not done:
            raise SystemExit(f"no progress after {placed} placements")
        placed += len(done)
        for run_id in done:
            sim.end_at_once(run_id)
    return {
        "cycles": cycles,
        "placed": placed,
        "seconds_in_decide": round(sim.decide_s, 3),
        "worst_cycle_s": round(sim.worst_decide_s, 3),
        "placements_per_s": round(placed / sim.decide_s),
    }


def used(plan: Plan, agents: list[workload.Agent], runs: list[m.RunRecord]) -> dict[str, Any]:
    by_id = {r.run_id: r.spec.resources for r in runs}
    caps = {a.agent_id: a.capacity for a in agents}
    free = {a.agent_id: [a.capacity.cpus, a.capacity.memory_mb, a.capacity.gpus] for a in agents}
    cpus = gpus = 0.0
    for p in plan.placements:
        res = by_id[p.run_id]
        for agent_id in p.agent_ids:
            cpus += res.cpus
            gpus += res.gpus
            f = free[agent_id]
            f[0] -= res.cpus
            f[1] -= res.memory_mb
            f[2] -= res.gpus
    # a free GPU is stranded when GPU runs still wait but none fits that agent's CPUs/memory
    placed = {p.run_id for p in plan.placements}
    waiting = {
        (res.cpus, res.memory_mb, res.gpus)
        for run_id, res in by_id.items()
        if run_id not in placed and res.gpus > 0
    }
    stranded = 0
    for fc, fm, fg in free.values():
        if fg <= 0 or not waiting:
            continue
        gpu_fits = any(g <= fg for _, _, g in waiting)
        if gpu_fits and not any(c <= fc + 1e-9 and mm <= fm and g <= fg for c, mm, g in waiting):
            stranded += int(fg)
    total_cpus = sum(c.cpus for c in caps.values())
    total_gpus = sum(c.gpus for c in caps.values())
    return {
        "cpus_used": cpus / total_cpus,
        "gpus_used": gpus / total_gpus if total_gpus else 0.0,
        "gpus_free": sum(max(0, f[2]) for f in free.values()) / total_gpus if total_gpus else 0,
        "gpus_stranded": stranded / total_gpus if total_gpus else 0.0,
    }


def offline_best_fit(agents: list[workload.Agent], runs: list[m.RunRecord]) -> Plan:
    """Best-fit decreasing: the same filter and score, largest requests first."""

    def size(r: m.RunRecord) -> int:
        res = r.spec.resources
        return res.gpus * 1_000_000 + int(res.cpus * 1000) * 100 + res.memory_mb // 1024

    ordered = [
        msgspec.structs.replace(r, spec=msgspec.structs.replace(r.spec, priority=size(r)))
        for r in runs
    ]
    return place(ordered, empty_slots(agents))


def main() -> int:
    args = _parse_args()
    agents = workload.agents(args.agents, args.seed)
    runs = workload.queued(args.runs, args.seed)

    times = []
    plan = Plan()
    for _ in range(args.repeat):
        dt, plan = one_pass(agents, runs)
        times.append(dt)
    best = min(times)
    online = used(plan, agents, runs)
    offline = used(offline_best_fit(agents, runs), agents, runs)
    result: dict[str, Any] = {
        "agents": args.agents,
        "runs": args.runs,
        "one_pass": {
            "seconds_best": round(best, 4),
            "seconds_median": round(statistics.median(times), 4),
            "seconds_all": [round(t, 4) for t in times],
            "placed": len(plan.placements),
            "decisions_per_s": round(args.runs / best),
            "target_decisions_per_s": 20_000,
        },
        "packing": {
            "online": {k: round(v, 4) for k, v in online.items()},
            "offline_best_fit": {k: round(v, 4) for k, v in offline.items()},
            "cpu_ratio": round(online["cpus_used"] / offline["cpus_used"], 4),
            "gpu_ratio": round(online["gpus_used"] / max(offline["gpus_used"], 1e-9), 4),
            "target_ratio": 0.95,
            "target_stranded": 0.02,
        },
    }
    if not args.no_drain:
        result["drain"] = drain(agents, runs)
    pk = result["packing"]
    result["met"] = {
        "decisions": result["one_pass"]["decisions_per_s"] >= 20_000,
        "packing": min(pk["cpu_ratio"], pk["gpu_ratio"]) >= 0.95 and online["gpus_stranded"] < 0.02,
    }
    print(json.dumps(result, indent=2))
    _print_summary(result, online)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="one-pass repetitions (best is kept)")
    p.add_argument("--no-drain", action="store_true", help="skip the drain measurement")
    return p.parse_args()


def _print_summary(result: dict[str, Any], online: dict[str, Any]) -> None:
    """The headline numbers, one per line, on stderr (the JSON went to stdout)."""
    pk = result["packing"]
    rows = [
        ("one pass: decisions/s (>= 20,000)", f"{result['one_pass']['decisions_per_s']:,}"),
        ("one pass: seconds (best of n)", result["one_pass"]["seconds_best"]),
        ("one pass: runs placed", result["one_pass"]["placed"]),
        ("packing: CPU share online/offline", pk["cpu_ratio"]),
        ("packing: GPU share online/offline", pk["gpu_ratio"]),
        ("packing: GPUs stranded (< 2%)", f"{online['gpus_stranded']:.2%}"),
    ]
    if "drain" in result:
        d = result["drain"]
        rows.append(("drain: placements/s in decide()", f"{d['placements_per_s']:,}"))
        rows.append(("drain: cycles, worst cycle (s)", f"{d['cycles']}, {d['worst_cycle_s']}"))
    for name, value in rows:
        print(f"{name:<38} {value}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
