"""Compute targets as runs see them: which take new runs, why one has no agent now, and the
temporary clusters of run-based creation. Pure: state and ``now`` in, answers out.

A target a run may name is a cluster, an attached machine, or a name agents serve. A cluster
being deleted, a machine being detached, and one whose provisioning or attach Failed take no
new run (``refusal``); once gone, the name is unknown. A run whose target exists but has no
live agent says why and since when (``no_agent``), kept on its record (``RunRecord.waiting``)
so that every reader shows the same sentence.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal

import msgspec

from sortie.proto import messages as m
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler import clusters
from sortie.scheduler.events import Command, Config, Log
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.runs import cancel, end

RUN_BASED = "amlcompute"  # the target name that asks for a temporary cluster per run
RUN_BASED_IDLE_S = 600.0  # a temporary cluster's idle time before a node stops
DETACH_INCOMPLETE = "detach_incomplete"  # a machine's error code: a detach could not clean up


def refusal(state: SchedulerState, target: str) -> m.ErrorReply | None:
    """Why a new run may not go to ``target`` now (deleted, detached, failed), or None."""
    compute = state.computes.get(target)
    if compute is not None:
        if compute.provisioning_state == "Deleting":
            return _invalid(
                f"compute target {target!r} is being deleted: submit to another target "
                "(`sortie compute list`), or create it again once it is gone"
            )
        if compute.provisioning_state == "Failed":
            return _invalid(
                f"compute target {target!r} failed to provision ({_last_error(compute)}): fix "
                f"the cause and try again with `sortie compute update {target} --min-nodes N`, "
                f"or delete it (`sortie compute delete {target}`)"
            )
    vm = state.vms.get(target)
    if vm is not None:
        if vm.provisioning_state == "Deleting":
            return _invalid(
                f"compute target {target!r} is being detached: submit to another target "
                "(`sortie compute list`)"
            )
        if vm.provisioning_state == "Failed":
            what = "detaching" if _code(vm) == DETACH_INCOMPLETE else "attaching"
            return _invalid(
                f"{what} compute target {target!r} failed ({_last_error(vm)}): attach it "
                f"again (`sortie compute attach {target} ...`) or detach it "
                f"(`sortie compute detach {target}`)"
            )
    return None


def _invalid(message: str) -> m.ErrorReply:
    return m.ErrorReply(code="invalid_state", message=message)


def _code(rec: m.VmRecord) -> str | None:
    return rec.provisioning_errors[-1].code if rec.provisioning_errors else None


def _last_error(rec: m.ComputeRecord | m.VmRecord) -> str:
    if not rec.provisioning_errors:
        return "no error recorded"
    err = rec.provisioning_errors[-1]
    return f"{err.code}: {err.message}"


def no_agent(state: SchedulerState, target: str) -> m.TargetWait | None:
    """Why no live agent serves ``target``, and since when; None while one does."""
    if any(a.target == target and not a.lost for a in state.agents.values()):
        return None
    vm = state.vms.get(target)
    if vm is not None:
        return _vm_wait(state, vm)
    compute = state.computes.get(target)
    if compute is not None:
        return _cluster_wait(state, compute)
    gone = [a for a in state.agents.values() if a.target == target]
    if gone:
        last = max(gone, key=lambda a: a.last_seen)
        return m.TargetWait(
            reason=f"its agent {last.agent_id} was lost (last heard from)", since=last.last_seen
        )
    return None


def _vm_wait(state: SchedulerState, vm: m.VmRecord) -> m.TargetWait:
    if vm.provisioning_state == "Failed" and vm.provisioning_errors:
        err = vm.provisioning_errors[-1]
        what = "detach" if err.code == DETACH_INCOMPLETE else "attach"
        return m.TargetWait(reason=f"{what} failed: {err.code}: {err.message}", since=err.at)
    if vm.provisioning_state == "Creating":
        return m.TargetWait(reason="the machine is being attached", since=vm.created_at)
    if vm.provisioning_state == "Deleting":
        return m.TargetWait(reason="the machine is being detached", since=vm.created_at)
    agent = state.agents.get(vm.name)
    since = agent.last_seen if agent is not None else vm.created_at
    if vm.link == "reconnecting":
        return m.TargetWait(reason="machine unreachable (its ssh link reconnects)", since=since)
    return m.TargetWait(reason="the machine's agent is not connected", since=since)


def _cluster_wait(state: SchedulerState, compute: m.ComputeRecord) -> m.TargetWait:
    name = compute.name
    if compute.provisioning_state == "Failed" and compute.provisioning_errors:
        err = compute.provisioning_errors[-1]
        return m.TargetWait(reason=f"provisioning failed: {err.code}: {err.message}", since=err.at)
    nodes = [n for n in state.nodes.values() if n.cluster == name]
    creating = [n for n in nodes if n.state == "creating"]
    if creating:
        first = min(n.created_at for n in creating)
        # no count in the sentence: it would change (and be written again) with each node
        return m.TargetWait(reason=f"nodes of {name} are starting", since=first)
    stopped = [d for d in compute.decisions if d.action not in {"scale_up", "backoff"}]
    if stopped:
        last = stopped[-1]
        what = {
            "scale_down": "stopped by the autoscaler",
            "node_failed": "failed",
            "node_preempted": "preempted",
        }[last.action]
        whose = "its only node was" if len(last.nodes) == 1 else f"its {len(last.nodes)} nodes were"
        return m.TargetWait(reason=f"{whose} {what}", since=last.at)
    return m.TargetWait(reason=f"{name} has no node yet", since=compute.created_at)


def waiting_changes(state: SchedulerState) -> list[tuple[m.RunRecord, m.TargetWait | None]]:
    """The queued runs whose ``waiting`` must change, each with its new value. A reason that
    stays keeps its first ``since``. Costs the runs with a wait recorded, and the queued runs of
    targets that have no agent (not the whole queue)."""
    per_target = {target: no_agent(state, target) for target in _queued_targets(state)}
    out: list[tuple[m.RunRecord, m.TargetWait | None]] = []
    for rec in state.runs.waiting():  # a wait recorded: cleared when its target has agents
        if per_target.get(rec.spec.target) is None:
            out.append((rec, None))
    if any(wait is not None for wait in per_target.values()):
        for rec in state.runs.queued():
            wait = per_target[rec.spec.target]
            old = rec.waiting
            if wait is None or (old is not None and wait.reason == old.reason):
                continue
            out.append((rec, wait))
    return out


def _queued_targets(state: SchedulerState) -> list[str]:
    return sorted({key.target for key in state.runs.classes})


def timed_out(queued: Iterable[m.RunRecord], now: float) -> list[m.RunRecord]:
    """The queued runs that have waited longer than their ``queue_timeout_s`` (counted from
    when they last became Queued)."""
    out = []
    for rec in queued:
        limit = rec.spec.queue_timeout_s
        if limit is None:
            continue
        since = rec.history[-1].at if rec.history else rec.created_at
        if now - since >= limit:
            out.append(rec)
    return out


def temporary_name(run_id: str) -> str:
    """The temporary cluster's name: ``run-`` and the run id's random suffix (16 at most)."""
    suffix = "".join(c for c in run_id.rsplit("_", 1)[-1] if c.isalnum())[-12:].lower()
    return f"run-{suffix or 'x'}"


def run_based_cluster(
    spec: m.RunSpec,
    run_id: str,
    config: Config,
    existing: Collection[str],
    now: float,
) -> tuple[m.RunSpec, m.ComputeRecord] | m.ErrorReply:
    """For a run with target ``amlcompute``: its temporary cluster (process nodes of the
    asked size), and the spec retargeted to it."""
    aml = spec.amlcompute
    if aml is None or not aml.vm_size.strip():
        return m.ErrorReply(
            code="bad_request",
            message=(
                f"target {RUN_BASED!r} makes a cluster for the run and needs its node size: "
                "set run_config.amlcompute.vm_size (CLI: --vm-size SIZE; `sortie compute "
                "sizes` lists them)"
            ),
        )
    name = temporary_name(run_id)
    cluster = m.ProcessCluster(
        vm_size=aml.vm_size,
        max_nodes=max(aml.max_nodes, spec.node_count),
        vm_priority=aml.vm_priority,
        # its nodes go with the cluster when the run ends; none is stopped while it waits
        idle_seconds_before_scaledown=RUN_BASED_IDLE_S,
    )
    made = clusters.new_compute(
        m.ComputeCreate(name=name, cluster=cluster), existing, config.catalog, config.providers, now
    )
    if isinstance(made, m.ErrorReply):
        return made
    return msgspec.structs.replace(spec, target=name), msgspec.structs.replace(made, for_run=run_id)


def ended_temporaries(state: SchedulerState) -> list[str]:
    """Temporary clusters whose run has ended (or is no longer known, as after a restart:
    only unfinished runs are loaded) and that are not yet being deleted."""
    out = []
    for name, compute in state.computes.items():
        if compute.for_run is None or compute.provisioning_state == "Deleting":
            continue
        rec = state.runs.get(compute.for_run)
        if rec is None or rec.state in TERMINAL:
            out.append(name)
    return sorted(out)


def delete_temporary(state: SchedulerState, name: str) -> list[Command]:
    """Delete a run-based creation's cluster: its run has ended."""
    compute = state.computes[name]
    state.computes.put(name, msgspec.structs.replace(compute, provisioning_state="Deleting"))
    return [Log("compute deleting", {"compute": name, "run_ended": compute.for_run})]


def release_runs(
    state: SchedulerState,
    name: str,
    *,
    force: bool,
    failed: bool,
    action: Literal["delete", "detach"],
    now: float,
) -> tuple[list[Command], m.ErrorReply | None]:
    """Before a target is deleted or detached: its unfinished runs. Without ``force`` they
    refuse it (queued ones too), unless the target Failed (``failed``: its queued runs could
    never start). Otherwise queued runs end Failed (kind ``target_deleted``) and running ones
    are canceled through their agents."""
    active = sorted(
        (r for r in state.runs.values() if r.spec.target == name and r.state not in TERMINAL),
        key=lambda r: r.run_id,
    )
    queued = [r for r in active if r.state is RunState.QUEUED]
    started = [r for r in active if r.state is not RunState.QUEUED]
    if not force and (started or (queued and not failed)):
        why = _busy(name, queued, started, f"sortie compute {action}")
        return [], m.ErrorReply(code="invalid_state", message=why)
    cmds: list[Command] = []
    err = m.RunError(
        kind=ErrorKind.TARGET_DELETED,
        message=f"its target {name} was {action}{'d' if action == 'delete' else 'ed'}",
    )
    for rec in queued:
        end(state, rec, RunState.FAILED, now, cmds, error=err, waiting=None)
    for rec in started:
        cancel(state, rec, now, cmds)
    return cmds, None


def _busy(name: str, queued: list[m.RunRecord], started: list[m.RunRecord], verb: str) -> str:
    parts = []
    if queued:
        ids = ", ".join(r.run_id for r in queued[:5]) + (" ..." if len(queued) > 5 else "")
        parts.append(f"{len(queued)} queued run(s) target {name} ({ids})")
    if started:
        ids = ", ".join(r.run_id for r in started[:5]) + (" ..." if len(started) > 5 else "")
        parts.append(f"{len(started)} active run(s) run on {name} ({ids})")
    return (
        "; ".join(parts) + f": cancel them (or wait for them), or use `{verb} --force` "
        "(queued runs then fail with target_deleted, active ones are canceled)"
    )


def retire_agent(state: SchedulerState, agent_id: str) -> None:
    """A detached machine's or a deleted cluster node's agent: it leaves the agents table
    (and every listing), and its heartbeats are ignored from now on."""
    if agent_id in state.agents:
        state.agents.delete(agent_id)
    state.retired.add(agent_id)
