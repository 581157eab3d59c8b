"""Reconciling only what changed decides what reconciling everything decides.

``core.decide`` judges only the runs and attempts that changed since it last looked
(``reconcile.Scope``); a run settled on its agent is not looked at again. Random histories of
submissions, heartbeats (agents that restart, go silent, list runs that are not theirs or
forget ones that are), reports and time: at every cycle, the scoped reconciliation and a full
one over the same state give the same verdicts."""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.proto.gang import agent_ids
from sortie.proto.states import ON_AGENT, RunState
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Reconciliation, Timing, reconcile
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3, kill_grace_s=5))
AGENTS = ["a1", "a2", "a3"]


def verdicts(r: Reconciliation) -> dict[str, object]:
    return {
        "lost": sorted(r.lost_agents),
        "requeue": sorted(run_id for run_id, _ in r.requeue),
        "fail": sorted(run_id for run_id, _ in r.fail),
        "cancel": sorted(r.cancel),
        "resend": sorted(r.resend),
        "stale": sorted((a, ref.run_id, ref.attempt) for a, ref in r.stop_stale),
    }


def listed(s: SchedulerState, agent: str, rng: random.Random) -> list[tuple[str, int]]:
    """What an agent lists: mostly its runs, sometimes not all, sometimes others' or old ones."""
    mine = [
        (r.run_id, r.attempt)
        for r in s.runs.values()
        if r.state in ON_AGENT and agent in agent_ids(r)
    ]
    out = [ref for ref in mine if rng.random() < 0.85]
    if rng.random() < 0.15 and s.runs:
        other = rng.choice(list(s.runs.values()))
        out.append((other.run_id, max(1, other.attempt - rng.randint(0, 1))))
    if rng.random() < 0.05:
        out.append(("ghost", 1))
    return sorted(set(out))


def step(s: SchedulerState, now: float, rng: random.Random, incarnations: dict[str, str]) -> None:
    kind = rng.choice(["submit", "heartbeat", "heartbeat", "report", "restart"])
    if kind == "submit":
        run_id = f"r{len(s.submissions) + rng.randrange(10**6)}"
        req = m.SubmitRequest(spec=spec(resources=m.Resources(cpus=1)))
        core.handle(s, core.Submitted(request=req, run_id=run_id, reply_to="r"), now, CFG)
    elif kind in ("heartbeat", "restart"):
        agent = rng.choice(AGENTS)
        if kind == "restart":
            incarnations[agent] = f"i{rng.randrange(1000)}"
        running = listed(s, agent, rng)
        finished = [ref for ref in running if rng.random() < 0.1]
        hb = heartbeat(
            agent,
            incarnations[agent],
            running=[ref for ref in running if ref not in finished],
            finished=finished,
            cpus=2,
        )
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), now, CFG)
    else:
        on = [r for r in s.runs.values() if r.state in ON_AGENT and r.gang]
        if on:
            rec = rng.choice(on)
            member = rec.gang[0]
            rep = m.RunReport(
                agent_id=member.agent_id,
                incarnation=member.incarnation,
                run_id=rec.run_id,
                attempt=rec.attempt,
                state=rng.choice([RunState.RUNNING, RunState.COMPLETED]),
                at=now,
            )
            core.handle(s, core.ReportSeen(report=rep), now, CFG)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32))
def test_scoped_reconciliation_decides_what_a_full_one_decides(seed: int) -> None:
    rng = random.Random(seed)
    s = SchedulerState(started_at=0.0)
    incarnations = dict.fromkeys(AGENTS, "i1")
    now = 0.0
    for _ in range(60):
        for _ in range(rng.randint(0, 4)):
            step(s, now, rng, incarnations)
        full = reconcile(
            s.runs,
            s.agents,
            s.assign_sent_at,
            now=now,
            started_at=s.started_at,
            timing=CFG.timing,
        )
        scoped = core.reconciliation(copy.deepcopy(s), now, CFG)
        assert verdicts(scoped) == verdicts(full), (seed, now)
        core.decide(s, now, CFG)
        now += rng.choice([0.5, 1.0, 2.0, 4.0, 12.0])
