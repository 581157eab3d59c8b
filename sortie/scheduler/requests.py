"""Answers to compute, agent and why requests. Pure: state in, state changes and commands out."""

from __future__ import annotations

from collections import Counter

import msgspec

from sortie.proto import messages as m
from sortie.proto.states import ON_AGENT, RunState
from sortie.proto.waiting import describe, describe_engine_job, engine_wait
from sortie.scheduler import capacity, clusters, targets, vms
from sortie.scheduler.events import (
    AgentAsked,
    Command,
    ComputeAsked,
    Config,
    Log,
    Reply,
    SaveSecret,
    SendToAgent,
    WhyAsked,
)
from sortie.scheduler.model import SchedulerState

SHOWN_STOPPED = 10  # stopped nodes a cluster's node list shows, latest last


def _error(reply_to: str, code: m.ErrorCode, message: str) -> list[Command]:
    return [Reply(reply_to, m.ErrorReply(code=code, message=message))]


def compute_info(state: SchedulerState, name: str) -> m.ComputeInfo:
    rec = state.computes[name]
    nodes = sorted((n for n in state.nodes.values() if n.cluster == name), key=lambda n: n.node_id)
    busy_agents = {r.agent_id for r in state.runs.values() if r.state in ON_AGENT}
    running = [n for n in nodes if n.state == "running"]
    counts = m.NodeCounts(
        current=sum(1 for n in nodes if n.state in ("creating", "running")),
        target=state.node_targets.get(name, 0),
        idle=sum(1 for n in running if n.node_id not in busy_agents),
        busy=sum(1 for n in running if n.node_id in busy_agents),
        preempted=sum(1 for n in nodes if n.state == "preempted"),
    )
    # stopped nodes stay on record until the cluster goes: the latest few are shown (as
    # stopped, which `sortie status` tells apart from a lost agent)
    stopped = sorted((n for n in nodes if n.state == "stopped"), key=lambda n: n.changed_at)
    shown = [n for n in nodes if n.state != "stopped"] + stopped[-SHOWN_STOPPED:]
    return m.ComputeInfo(compute=rec, counts=counts, nodes=shown)


def on_compute(
    state: SchedulerState, ev: ComputeAsked, now: float, config: Config
) -> list[Command]:
    req = ev.request
    if isinstance(req, m.SizesList):
        sizes = sorted(config.catalog.values(), key=lambda s: (s.gpus, s.cpus, s.name))
        return [Reply(ev.reply_to, m.SizesReply(sizes=sizes))]
    if isinstance(req, m.ComputeList):
        infos = [compute_info(state, n) for n in sorted(state.computes)]
        machines = [state.vms[n] for n in sorted(state.vms)]
        return [Reply(ev.reply_to, m.ComputeListReply(computes=infos, vms=machines))]
    if isinstance(req, m.ComputeAttach):
        return vms.attach(state, req, ev.reply_to, now)
    if isinstance(req, m.ComputeDetach):
        return vms.detach(state, req, ev.reply_to, now)
    if isinstance(req, m.ComputeCreate):
        return _create_compute(state, req, ev.reply_to, now, config)
    return _on_named_compute(state, req, ev.reply_to, now, config)


def _create_compute(
    state: SchedulerState, req: m.ComputeCreate, reply_to: str, now: float, config: Config
) -> list[Command]:
    existing = set(state.computes) | set(state.vms)
    made = clusters.new_compute(req, existing, config.catalog, config.providers, now)
    if isinstance(made, m.ErrorReply):
        return [Reply(reply_to, made)]
    created: list[Command] = []
    if isinstance(made.cluster, m.SshPoolCluster):
        if (why := vms.check_login(made.cluster.ssh, req.secret)) is not None:
            return _error(reply_to, "bad_request", why)
        assert req.secret is not None
        created.append(SaveSecret(name=made.name, secret=req.secret))
    state.computes.put(made.name, made)
    return [
        *created,
        Reply(reply_to, m.ComputeReply(info=compute_info(state, made.name))),
        Log("compute created", {"compute": made.name, "vm_size": made.cluster.vm_size}),
    ]


def _on_named_compute(
    state: SchedulerState,
    req: m.ComputeShow | m.ComputeUpdate | m.ComputeDelete,
    reply_to: str,
    now: float,
    config: Config,
) -> list[Command]:
    """Show, update or delete one compute (an attached machine can only be shown here)."""
    if req.name in state.vms:
        if isinstance(req, m.ComputeShow):
            return [Reply(reply_to, m.VmReply(vm=state.vms[req.name]))]
        return _error(
            reply_to,
            "invalid_state",
            f"{req.name} is an attached machine: use `sortie compute detach {req.name}`",
        )
    rec = state.computes.get(req.name)
    if rec is None:
        known = ", ".join(sorted(state.computes)) or "none"
        return _error(reply_to, "not_found", f"no compute target {req.name!r}; clusters: {known}")
    if isinstance(req, m.ComputeShow):
        return [Reply(reply_to, m.ComputeReply(info=compute_info(state, req.name)))]
    if isinstance(req, m.ComputeUpdate):
        changed = clusters.updated_compute(rec, req, config.catalog, config.providers)
        if isinstance(changed, m.ErrorReply):
            return [Reply(reply_to, changed)]
        state.computes.put(req.name, changed)
        return [Reply(reply_to, m.ComputeReply(info=compute_info(state, req.name)))]
    return _delete_compute(state, rec, req, reply_to, now)


def _delete_compute(
    state: SchedulerState,
    rec: m.ComputeRecord,
    req: m.ComputeDelete,
    reply_to: str,
    now: float,
) -> list[Command]:
    """Mark the compute Deleting (its nodes go in later cycles). Its unfinished runs refuse
    it; with --force its queued runs fail (target_deleted) and its active ones are canceled."""
    cmds, refused = targets.release_runs(
        state,
        req.name,
        force=req.force,
        failed=rec.provisioning_state == "Failed",
        action="delete",
        now=now,
    )
    if refused is not None:
        return [Reply(reply_to, refused)]
    state.computes.put(req.name, msgspec.structs.replace(rec, provisioning_state="Deleting"))
    cmds.append(Reply(reply_to, m.ComputeReply(info=compute_info(state, req.name))))
    cmds.append(Log("compute deleting", {"compute": req.name}))
    return cmds


def on_agent(state: SchedulerState, ev: AgentAsked, now: float, config: Config) -> list[Command]:
    req = ev.request
    if isinstance(req, m.AgentList):
        ids = sorted(state.agents)
        agents = [state.agents[a].record() for a in ids]
        held = capacity.usage(state)
        reply = m.AgentListReply(agents=agents, usage=[held[a] for a in ids])
        return [Reply(ev.reply_to, reply)]
    view = state.agents.get(req.agent_id)
    if view is None:
        known = ", ".join(sorted(state.agents)) or "none"
        return _error(ev.reply_to, "not_found", f"no agent {req.agent_id!r}; agents: {known}")
    cmds: list[Command] = []
    if req.action == "cordon":
        view.cordoned = True
    elif req.action == "uncordon":
        view.cordoned = False
        view.draining = False
    elif req.action == "drain":
        view.draining = True
    else:  # preempt: a provider's notice, simulated on request
        if view.lost:
            return _error(ev.reply_to, "invalid_state", f"agent {req.agent_id} is lost")
        view.preempting = True
        cmds.append(SendToAgent(view.agent_id, m.Preempt(), None))
        node = state.nodes.get(view.agent_id)
        if node is not None and node.state in ("creating", "running"):
            state.nodes.put(
                node.node_id,
                msgspec.structs.replace(
                    node, state="preempted", changed_at=now, message="preempted"
                ),
            )
            # the node goes away once its runs had their grace period
            state.preempt_deadline[node.node_id] = now + config.preempt_grace_s + 5.0
            compute = state.computes.get(node.cluster)
            if compute is not None:
                state.computes.put(
                    node.cluster,
                    clusters.with_decision(
                        compute,
                        m.ScaleDecision(
                            at=now,
                            action="node_preempted",
                            nodes=[node.node_id],
                            reason=f"node {node.node_id} was preempted",
                        ),
                    ),
                )
    state.agents.touch(view.agent_id)
    cmds.append(Reply(ev.reply_to, m.AgentReply(agent=view.record())))
    cmds.append(Log(f"agent {req.action}", {"agent_id": view.agent_id}))
    return cmds


def on_why(state: SchedulerState, ev: WhyAsked, now: float) -> list[Command]:
    rec = state.runs.get(ev.run_id)
    if rec is None:
        return _error(
            ev.reply_to,
            "not_found",
            f"run {ev.run_id!r} is not active (it ended, or does not exist): `sortie run show`",
        )
    if rec.state is not RunState.QUEUED:
        where = f" on agent {rec.agent_id}" if rec.agent_id else ""
        summary = f"run {rec.run_id} is not waiting: it is {rec.state}{where}"
        if (queued := engine_wait(rec)) is not None:
            summary = f"run {rec.run_id} is {rec.state}{where}, {queued}"
        if rec.engine_job is not None:
            summary += f" ({describe_engine_job(rec.engine_job, now)})"
        return [Reply(ev.reply_to, m.WhyReply(run_id=rec.run_id, state=rec.state, summary=summary))]
    reasons = state.why.of(rec)
    summary = queue_summary(state, rec, now)
    return [
        Reply(
            ev.reply_to,
            m.WhyReply(run_id=rec.run_id, state=rec.state, reasons=reasons, summary=summary),
        )
    ]


def queue_summary(state: SchedulerState, rec: m.RunRecord, now: float) -> str:
    """Why a queued run waits: its target's missing agent (and since when), or what the
    placement found against each agent, and what its cluster is doing about it."""
    reasons = state.why.of(rec)
    wait = targets.no_agent(state, rec.spec.target)
    if wait is not None:
        since = rec.waiting.since if rec.waiting and rec.waiting.reason == wait.reason else None
        if since is not None:
            wait = msgspec.structs.replace(wait, since=since)
        summary = "queued: " + describe(rec.spec.target, wait, now)
    elif reasons:
        parts = "; ".join(f"{n} {why}" for why, n in Counter(reasons).most_common())
        summary = f"queued: no agent of target {rec.spec.target!r} can take it now ({parts})"
    else:
        summary = "queued: waiting for the next scheduling cycle"
    compute = state.computes.get(rec.spec.target)
    if compute is not None:
        creating = sum(
            1 for n in state.nodes.values() if n.cluster == compute.name and n.state == "creating"
        )
        if creating and wait is None:
            summary += f"; {creating} node(s) of {compute.name} are starting"
        if compute.backoff_until is not None and compute.decisions:
            last = compute.decisions[-1]
            if last.action == "backoff":
                summary += f"; autoscaler: {last.reason}"
    return summary
