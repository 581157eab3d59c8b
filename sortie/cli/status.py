"""`sortie status`: computes, agents, the queue and active runs at a glance.

:func:`gather` asks the scheduler (targets, computes, agents) and reads the runs bucket,
concurrently; :func:`summarise` turns what came back into one ``StatusView`` (the
``--output json`` shape, in ``sortie.client.views``), and :func:`render` turns that view into
compact tables. The last two are pure, so the shape is tested without a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sortie.cli.output import add_output, emit
from sortie.client.client import Client
from sortie.client.views import (
    QueuedGroup,
    StatusAgent,
    StatusCluster,
    StatusMachine,
    StatusQueue,
    StatusRun,
    StatusScheduler,
    StatusTarget,
    StatusView,
    iso,
)
from sortie.proto import messages as m
from sortie.proto import subjects
from sortie.proto.engines import kind_of
from sortie.proto.gang import agent_ids
from sortie.proto.leadership import Leadership
from sortie.proto.states import ON_AGENT, TERMINAL, RunState
from sortie.proto.waiting import describe, engine_wait

RECENT_S = 3600.0  # "ended in the last hour"
STANDBY_SHOWN_LEASES = 3  # a standby not renewed for this many leases is gone


@dataclass(frozen=True)
class Observed:
    """What `sortie status` read, as it came."""

    url: str
    targets: list[m.TargetInfo]
    computes: list[m.ComputeInfo]
    vms: list[m.VmRecord]
    agents: list[m.AgentRecord]
    runs: list[m.RunRecord]
    # the leader lease and standbys' presence, by key (subjects.KV_LEADERSHIP)
    schedulers: list[tuple[str, Leadership]] = field(default_factory=list)


async def gather(client: Client) -> Observed:
    targets, computes, agents, runs, schedulers = await asyncio.gather(
        client.targets(),
        client.compute(m.ComputeList()),
        client.agents(m.AgentList()),
        client.list_runs(),
        client.schedulers(),
    )
    return Observed(
        url=client.bus.url,
        targets=list(targets),
        computes=list(computes.computes),
        vms=list(computes.vms),
        agents=list(agents.agents),
        runs=list(runs),
        schedulers=schedulers,
    )


def summarise(seen: Observed, now: float) -> StatusView:
    """The status as one view (what ``--output json`` prints)."""
    active = [r for r in seen.runs if r.state not in TERMINAL]
    queued = [r for r in active if r.state is RunState.QUEUED]
    on_agents = [r for r in active if r.state in ON_AGENT]
    recent: dict[str, int] = {str(s): 0 for s in sorted(TERMINAL)}
    for r in seen.runs:
        if r.state in TERMINAL and r.ended_at is not None and now - r.ended_at <= RECENT_S:
            recent[str(r.state)] += 1
    return StatusView(
        broker=seen.url,
        schedulers=_schedulers(seen.schedulers, now),
        targets=_targets(seen, queued, on_agents, active, now),
        computes=[
            *(_cluster(c) for c in sorted(seen.computes, key=lambda c: c.compute.name)),
            *(_machine(v) for v in sorted(seen.vms, key=lambda v: v.name)),
        ],
        agents=_agents(seen.agents, on_agents, _stopped_nodes(seen.computes)),
        queue=StatusQueue(total=len(queued), by_target=_queue(queued, now)),
        runs=[
            StatusRun(
                run_id=r.run_id,
                experiment=r.spec.experiment,
                target=r.spec.target,
                state=r.state,
                attempt=r.attempt,
                agents=agent_ids(r),
                started_at=iso(r.started_at),
                in_state_s=round(max(0.0, now - _state_since(r)), 1),
            )
            for r in sorted(on_agents, key=lambda r: (r.created_at, r.run_id))
        ],
        ended_last_hour=recent,
    )


def _targets(
    seen: Observed,
    queued: list[m.RunRecord],
    on_agents: list[m.RunRecord],
    active: list[m.RunRecord],
    now: float,
) -> list[StatusTarget]:
    """Every target something names: the scheduler's, the computes, and those runs ask for."""
    names = {t.name for t in seen.targets} | {c.compute.name for c in seen.computes}
    names |= {v.name for v in seen.vms} | {r.spec.target for r in active}
    kinds: dict[str, str] = {t.name: t.kind for t in seen.targets}
    kinds.update({c.compute.name: "cluster" for c in seen.computes})
    kinds.update({v.name: "vm" if v.vm.engine is None else kind_of(v.vm.engine) for v in seen.vms})
    live = {t.name: t.agents for t in seen.targets}
    return [
        StatusTarget(
            name=name,
            kind=kinds.get(name, "agents"),
            agents=live.get(name, 0),
            queued=sum(1 for r in queued if r.spec.target == name),
            active=sum(1 for r in on_agents if r.spec.target == name),
            waiting=_waiting(name, queued, now) or _engine_waiting(name, on_agents),
        )
        for name in sorted(names)
    ]


def _schedulers(stored: list[tuple[str, Leadership]], now: float) -> list[StatusScheduler]:
    """The leader (unless it released the lease at a clean stop), then each standby that
    renewed its presence lately (one killed leaves its key behind: gone after 3 leases)."""
    leader = next((r for k, r in stored if k == subjects.LEADER_KEY and not r.released), None)
    standbys = [
        r
        for k, r in stored
        if k.startswith(subjects.STANDBY_PREFIX)
        and now - r.renewed_at <= STANDBY_SHOWN_LEASES * r.lease_s
        and (leader is None or r.holder != leader.holder)
    ]
    roles: list[tuple[Literal["leader", "standby"], Leadership]] = []
    if leader is not None:
        roles.append(("leader", leader))
    roles += [("standby", r) for r in sorted(standbys, key=lambda r: (r.host, r.pid))]
    return [
        StatusScheduler(
            role=role,
            epoch=r.epoch,
            lease_age_s=round(max(0.0, now - r.renewed_at), 1),
            lease_s=r.lease_s,
            host=r.host,
            pid=r.pid,
            holder=r.holder,
            since=iso(r.acquired_at),
        )
        for role, r in roles
    ]


def _engine_waiting(target: str, on_agents: list[m.RunRecord]) -> str | None:
    """How many of the target's runs wait in its engine's queue, and the first one's reason:
    "target hpc: 2 runs waiting in slurm's queue: Resources"."""
    waits = [w for r in on_agents if r.spec.target == target and (w := engine_wait(r))]
    if not waits:
        return None
    return f"target {target}: {len(waits)} run{'s' * (len(waits) > 1)} {waits[0]}"


def _waiting(target: str, queued: list[m.RunRecord], now: float) -> str | None:
    """Why the target's queued runs have no agent (the longest-waiting one's reason)."""
    waits = [r.waiting for r in queued if r.spec.target == target and r.waiting is not None]
    if not waits:
        return None
    return describe(target, min(waits, key=lambda w: w.since), now)


def _stopped_nodes(computes: list[m.ComputeInfo]) -> set[str]:
    return {n.node_id for c in computes for n in c.nodes if n.state == "stopped"}


def _cluster(c: m.ComputeInfo) -> StatusCluster:
    return StatusCluster(
        name=c.compute.name,
        type=c.compute.type,
        vm_size=c.compute.cluster.vm_size,
        vm_priority=c.compute.cluster.vm_priority,
        provisioning_state=c.compute.provisioning_state,
        min_nodes=c.compute.cluster.min_nodes,
        max_nodes=c.compute.cluster.max_nodes,
        nodes=c.counts,
    )


def _machine(v: m.VmRecord) -> StatusMachine:
    return StatusMachine(
        name=v.name, address=v.vm.address, provisioning_state=v.provisioning_state, link=v.link
    )


@dataclass
class _Use:
    """What the runs on one agent take of it."""

    runs: int = 0
    cpus: float = 0.0
    gpus: int = 0


def _agents(
    agents: list[m.AgentRecord], on_agents: list[m.RunRecord], stopped: set[str]
) -> list[StatusAgent]:
    """Each agent with what the runs on it take (every member of a gang counts on its own).
    The agent of a node stopped on purpose (``stopped``) is stopped, not lost."""
    use: dict[str, _Use] = {}
    for rec in on_agents:
        res = rec.spec.resources
        for agent_id in agent_ids(rec):
            u = use.setdefault(agent_id, _Use())
            u.runs += 1
            u.cpus += res.cpus
            u.gpus += res.gpus
    out = []
    for a in sorted(agents, key=lambda a: (a.target, a.agent_id)):
        u = use.get(a.agent_id, _Use())
        out.append(
            StatusAgent(
                agent_id=a.agent_id,
                target=a.target,
                state="stopped" if a.state == "lost" and a.agent_id in stopped else a.state,
                cordoned=a.cordoned,
                draining=a.draining,
                priority=a.priority,
                cpus=a.capacity.cpus,
                cpus_used=u.cpus,
                memory_mb=a.capacity.memory_mb,
                gpus=a.capacity.gpus,
                gpus_used=u.gpus,
                gpu_type=a.capacity.gpu_type,
                runs=u.runs,
                last_seen=iso(a.last_seen),
                isolation=a.isolation,
            )
        )
    return out


def _queue(queued: list[m.RunRecord], now: float) -> list[QueuedGroup]:
    """Queued runs by target and priority (highest first), with the longest wait of each."""
    groups: dict[tuple[str, int], list[m.RunRecord]] = {}
    for rec in queued:
        groups.setdefault((rec.spec.target, rec.spec.priority), []).append(rec)
    out = []
    for (target, priority), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        since = min(_state_since(r) for r in recs)
        out.append(
            QueuedGroup(
                target=target,
                priority=priority,
                queued=len(recs),
                oldest_queued_at=iso(since),
                waiting_s=round(max(0.0, now - since), 1),
            )
        )
    return out


def _state_since(rec: m.RunRecord) -> float:
    """When the run entered its current state."""
    for change in reversed(rec.history):
        if change.state == rec.state:
            return change.at
    return rec.created_at


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _num(x: float) -> str:
    return f"{x:g}"


def render(status: StatusView) -> list[str]:
    """Compact tables for a terminal (the same data as the JSON)."""
    ready = sum(  # taking new runs
        1 for a in status.agents if a.state == "ready" and not (a.cordoned or a.draining)
    )
    queue = status.queue
    ended = ", ".join(f"{n} {s}" for s, n in status.ended_last_hour.items() if n) or "none"
    out = [
        f"Sortie at {status.broker}: {len(status.agents)} agents ({ready} ready), "
        f"{queue.total} queued, {len(status.runs)} active; ended in the last hour: "
        f"{ended}",
        "",
        *_targets_table(status),
        *(t.waiting for t in status.targets if t.waiting),
        "",
    ]
    if status.schedulers:
        rows: list[tuple[str, ...]] = [("SCHEDULER", "ROLE", "EPOCH", "LEASE AGE", "HOLDER")]
        rows += [
            (f"{s.host} pid {s.pid}", s.role, str(s.epoch), f"{s.lease_age_s:g}s", s.holder)
            for s in status.schedulers
        ]
        out += [*_table(rows), ""]
    if status.agents:
        out += _agents_table(status.agents)
        exposed = [
            a.agent_id for a in status.agents if a.state == "ready" and a.isolation == "none"
        ]
        if exposed:
            out += [
                f"Warning: runs are not isolated on {', '.join(exposed)}: a run there can read "
                "that agent's credentials (no Landlock in its kernel and not running as root)."
            ]
    else:
        out += ["No agents: start one with `sortie agent --target NAME` (or `sortie up`)."]
    if queue.by_target:
        rows = [("QUEUED FOR", "PRIORITY", "RUNS", "LONGEST WAIT")]
        rows += [
            (q.target, str(q.priority), str(q.queued), duration(q.waiting_s))
            for q in queue.by_target
        ]
        out += ["", *_table(rows)]
    if status.runs:
        rows = [("ACTIVE RUN", "EXPERIMENT", "TARGET", "STATE", "ATTEMPT", "AGENTS", "FOR")]
        rows += [
            (
                r.run_id,
                r.experiment,
                r.target,
                str(r.state),
                str(r.attempt),
                ",".join(r.agents) or "-",
                duration(r.in_state_s),
            )
            for r in status.runs
        ]
        out += ["", *_table(rows)]
    return out


def _targets_table(status: StatusView) -> list[str]:
    computes = {c.name: c for c in status.computes}
    rows: list[tuple[str, ...]] = [
        ("TARGET", "KIND", "AGENTS", "QUEUED", "ACTIVE", "NODES", "STATE")
    ]
    for t in status.targets:
        c = computes.get(t.name)
        nodes = "-"
        if isinstance(c, StatusCluster):
            nodes = f"{c.nodes.current}/{c.nodes.target} (max {c.max_nodes})"
        rows.append(
            (
                t.name,
                t.kind,
                str(t.agents),
                str(t.queued),
                str(t.active),
                nodes,
                c.provisioning_state if c is not None else "-",
            )
        )
    return _table(rows)


def _agents_table(agents: list[StatusAgent]) -> list[str]:
    rows = [("AGENT", "TARGET", "STATE", "CPUS", "GPUS", "RUNS", "FLAGS")]
    for a in agents:
        flags = ",".join(f for f, on in (("cordoned", a.cordoned), ("draining", a.draining)) if on)
        gpus = f"{a.gpus_used}/{a.gpus}" + (f" {a.gpu_type}" if a.gpu_type else "")
        rows.append(
            (
                a.agent_id,
                a.target,
                a.state,
                f"{_num(a.cpus_used)}/{_num(a.cpus)}",
                gpus,
                str(a.runs),
                flags or "-",
            )
        )
    return _table(rows)


def add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_output(sub.add_parser("status"))


async def run_status(client: Client, args: argparse.Namespace) -> int:
    return await show_status(client, output=args.output)


async def show_status(client: Client, *, output: str = "text") -> int:
    status = summarise(await gather(client), time.time())
    if output != "text":
        emit(status, output)
    else:
        print("\n".join(render(status)))
    return 0
