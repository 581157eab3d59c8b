"""A simulated cluster: many fake agents and a fake clock around the real decision code.

No NATS, no processes: events go straight into ``scheduler.core`` and commands come straight
back. The same harness drives the tests (``Sim.step``: agents advance their runs, heartbeat,
then one cycle) and ``benchmarks.decisions`` (``Sim.cycle`` alone, timed, over a queue it was
given with ``enqueue``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing

H100 = "NVIDIA H100 80GB HBM3"
# the agents' shapes, here and in the benchmarks' workload
SHAPES = (
    m.Capacity(cpus=4, memory_mb=16384),
    m.Capacity(cpus=8, memory_mb=32768, gpus=1, gpu_type=H100),
    m.Capacity(cpus=16, memory_mb=65536, gpus=8, gpu_type=H100),
)


@dataclass
class SimAgent:
    agent_id: str
    capacity: m.Capacity
    target: str = "sim"
    alive: bool = True
    incarnation: str = "i1"
    # run id -> (attempt, state, time of the next step)
    runs: dict[str, tuple[int, RunState, float]] = field(default_factory=dict)


@dataclass
class Sim:
    agents: list[SimAgent]
    seed: int = 0
    duration: tuple[float, float] = (1.0, 5.0)  # how long a run's script takes (fake seconds)
    config: core.Config = field(default_factory=lambda: core.Config(timing=Timing(lease_s=10)))
    now: float = 0.0
    state: SchedulerState = field(default_factory=SchedulerState)
    completions: dict[str, int] = field(default_factory=dict)  # run id -> times completed
    completed_attempt: dict[str, int] = field(default_factory=dict)  # run id -> its attempt
    max_used: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    decide_s: float = 0.0  # wall time spent in ``core.decide``, summed over cycles
    worst_decide_s: float = 0.0  # the longest single ``core.decide``

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.by_id = {a.agent_id: a for a in self.agents}
        self.submitted = 0

    def submit(self, n: int, resources: m.Resources | None = None, target: str = "sim") -> None:
        for _ in range(n):
            run_id = f"r{self.submitted}"
            self.submitted += 1
            req = m.SubmitRequest(
                spec=m.RunSpec(
                    experiment="sim",
                    script="t.py",
                    snapshot_id="0" * 64,
                    target=target,
                    resources=resources
                    or m.Resources(
                        cpus=self.rng.choice([0.5, 1, 2, 4]), gpus=self.rng.choice([0, 0, 0, 1])
                    ),
                )
            )
            self._apply(
                core.handle(
                    self.state,
                    core.Submitted(request=req, run_id=run_id, reply_to=""),
                    self.now,
                    self.config,
                )
            )

    def enqueue(self, records: Iterable[m.RunRecord]) -> None:
        """Records already in the store (as a restarted scheduler finds them), not submitted."""
        for rec in records:
            self.state.runs.put(rec.run_id, rec)

    def cycle(self) -> list[core.Command]:
        """One decision cycle, timed: ``core.decide``, then its commands go to the agents."""
        t = time.perf_counter()
        cmds = core.decide(self.state, self.now, self.config)
        dt = time.perf_counter() - t
        self.decide_s += dt
        self.worst_decide_s = max(self.worst_decide_s, dt)
        self._apply(cmds)
        return cmds

    def end_at_once(self, run_id: str) -> None:
        """The run ended the moment it was placed and its record is gone, with no report per
        state: its capacity is free for the next cycle (``benchmarks.decisions``' drain)."""
        rec = self.state.runs[run_id]
        self.state.runs.forget(run_id)
        self.state.assign_sent_at.pop(run_id, None)
        held = {g.agent_id for g in rec.gang} | ({rec.agent_id} if rec.agent_id else set())
        for agent_id in held:
            self.by_id[agent_id].runs.pop(run_id, None)

    def _apply(self, cmds: list[core.Command]) -> None:
        for c in cmds:
            if isinstance(c, core.SendToAgent):
                agent = self.by_id[c.agent_id]
                if not agent.alive:
                    continue
                cmd = c.command
                if isinstance(cmd, m.Assign) and cmd.incarnation == agent.incarnation:
                    if cmd.run_id not in agent.runs:
                        agent.runs[cmd.run_id] = (cmd.attempt, RunState.PREPARING, self.now + 0.1)
                elif isinstance(cmd, m.Cancel):
                    held = agent.runs.get(cmd.run_id)
                    if held is not None and held[0] <= cmd.attempt:
                        del agent.runs[cmd.run_id]
        for run_id, _ in self.state.runs.take_changes().written:
            core.forget_finished(self.state, run_id)

    def _report(self, agent: SimAgent, run_id: str, attempt: int, st: RunState, **kw: Any) -> None:
        rep = m.RunReport(
            agent_id=agent.agent_id,
            incarnation=agent.incarnation,
            run_id=run_id,
            attempt=attempt,
            state=st,
            at=self.now,
            **kw,
        )
        rec = self.state.runs.get(run_id)
        if (
            st is RunState.COMPLETED
            and rec is not None
            and rec.attempt == attempt
            and rec.agent_id == agent.agent_id
            and rec.state is RunState.FINALIZING
        ):
            self.completions[run_id] = self.completions.get(run_id, 0) + 1
            self.completed_attempt[run_id] = attempt
        self._apply(core.handle(self.state, core.ReportSeen(report=rep), self.now, self.config))

    def step(self, dt: float = 0.5) -> None:
        self.now += dt
        nxt = {
            RunState.PREPARING: RunState.STARTING,
            RunState.STARTING: RunState.RUNNING,
            RunState.RUNNING: RunState.FINALIZING,
            RunState.FINALIZING: RunState.COMPLETED,
        }
        for agent in self.agents:
            if not agent.alive:
                continue
            for run_id, (attempt, st, at) in list(agent.runs.items()):
                if at > self.now:
                    continue
                new = nxt[st]
                wait = self.rng.uniform(*self.duration) if new is RunState.RUNNING else 0.1
                self._report(
                    agent,
                    run_id,
                    attempt,
                    new,
                    **({"exit_code": 0} if new is RunState.COMPLETED else {}),
                )
                if new is RunState.COMPLETED:
                    agent.runs.pop(run_id, None)
                else:
                    agent.runs[run_id] = (attempt, new, self.now + wait)
            self.heartbeat(agent)
        self.cycle()
        self._check_capacity()

    def heartbeat(self, agent: SimAgent) -> None:
        hb = m.Heartbeat(
            agent_id=agent.agent_id,
            incarnation=agent.incarnation,
            target=agent.target,
            hostname="sim",
            capacity=agent.capacity,
            running=[m.RunRef(run_id=r, attempt=a) for r, (a, _, _) in agent.runs.items()],
            sent_at=self.now,
        )
        self._apply(
            core.handle(self.state, core.HeartbeatSeen(heartbeat=hb), self.now, self.config)
        )

    def _check_capacity(self) -> None:
        used: dict[str, list[float]] = {}
        for rec in self.state.runs.values():
            if (
                rec.agent_id is not None
                and rec.state not in TERMINAL
                and rec.state is not RunState.QUEUED
            ):
                u = used.setdefault(rec.agent_id, [0.0, 0, 0])
                u[0] += rec.spec.resources.cpus
                u[1] += rec.spec.resources.memory_mb
                u[2] += rec.spec.resources.gpus
        for agent_id, (cpus, mem, gpus) in used.items():
            cap = self.by_id[agent_id].capacity
            assert cpus <= cap.cpus + 1e-9, f"{agent_id} CPUs oversubscribed: {cpus} > {cap.cpus}"
            assert gpus <= cap.gpus, f"{agent_id} GPUs oversubscribed: {gpus} > {cap.gpus}"
            assert cap.memory_mb == 0 or mem <= cap.memory_mb

    def pending(self) -> int:
        return sum(1 for r in self.state.runs.values() if r.state not in TERMINAL)


def make_agents(n: int, seed: int = 0) -> list[SimAgent]:
    rng = random.Random(seed)
    return [SimAgent(agent_id=f"sim-{i}", capacity=rng.choice(SHAPES)) for i in range(n)]
