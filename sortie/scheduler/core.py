"""The scheduler's decisions: one closed set of events in, state changes and commands out.

``handle(state, event, now, config)`` and ``decide(state, now, config, new_node_id)`` are
synchronous and do no I/O: no clock reads, no id making (node ids come from the caller's
``new_node_id``), no NATS. The daemon (daemon.py) turns bus messages, provider results and
timer ticks into events, calls these, writes what the state's tables marked (compare-and-set
for runs), then carries out the returned commands. State is changed in place (copying 100,000
runs per event would be the bottleneck); only the scheduler's pure modules change it.
"""

from __future__ import annotations

import zlib

import msgspec

from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine
from sortie.proto.gang import members
from sortie.proto.pipelines import PipelineRequest
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import ON_AGENT, TERMINAL, RunState, can_transition
from sortie.scheduler import (
    nodes,
    pipeline_runs,
    queue_view,
    requests,
    run_notes,
    sweep_runs,
    targets,
    vms,
)
from sortie.scheduler.capacity import slots
from sortie.scheduler.events import (
    AgentAsked,
    AttachVm,
    BrokerAway,
    BrokerBack,
    CancelAsked,
    Command,
    ComputeAsked,
    Config,
    CreateNode,
    DetachVm,
    Event,
    HeartbeatSeen,
    LifecycleEvent,
    Log,
    MetricsSeen,
    NodeEvent,
    NodeFailed,
    NodeStopped,
    NoteSeen,
    PublishEof,
    QueueAsked,
    Reply,
    ReportSeen,
    RequestEvent,
    SaveRunSecret,
    SaveSecret,
    SendToAgent,
    SetTrialObjective,
    Started,
    StopNode,
    Submitted,
    SweepFeedReady,
    TagAsked,
    TargetsAsked,
    Tick,
    VmAttached,
    VmDetached,
    VmEvent,
    VmFailed,
    VmLink,
    VmProgress,
    WhyAsked,
)
from sortie.scheduler.model import AgentView, SchedulerState
from sortie.scheduler.placement import Placement, Plan, Waits, could_ever_hold, place_queue
from sortie.scheduler.reconcile import Reconciliation, Scope, reconcile
from sortie.scheduler.runs import (
    apply_report,
    cancel,
    end,
    move,
    requeue,
    store,
    with_engine_job,
)
from sortie.scheduler.validate import check_secrets, check_spec

__all__ = [
    "AgentAsked",
    "AttachVm",
    "BrokerAway",
    "BrokerBack",
    "CancelAsked",
    "Command",
    "ComputeAsked",
    "Config",
    "CreateNode",
    "DetachVm",
    "Event",
    "HeartbeatSeen",
    "Log",
    "MetricsSeen",
    "NodeFailed",
    "NodeStopped",
    "NoteSeen",
    "PublishEof",
    "QueueAsked",
    "Reply",
    "ReportSeen",
    "SaveRunSecret",
    "SaveSecret",
    "SendToAgent",
    "SetTrialObjective",
    "Started",
    "StopNode",
    "Submitted",
    "SweepFeedReady",
    "TagAsked",
    "TargetsAsked",
    "Tick",
    "VmAttached",
    "VmDetached",
    "VmFailed",
    "VmLink",
    "VmProgress",
    "WhyAsked",
    "decide",
    "forget_finished",
    "handle",
]


def handle(state: SchedulerState, event: Event, now: float, config: Config) -> list[Command]:
    if isinstance(event, RequestEvent):
        return _on_request(state, event, now, config)
    if isinstance(event, NodeEvent):
        return _on_node_event(state, event, now, config)
    if isinstance(event, VmEvent):
        return _on_vm_event(state, event, now)
    return _on_lifecycle(state, event, now)


def _on_request(
    state: SchedulerState, event: RequestEvent, now: float, config: Config
) -> list[Command]:
    if isinstance(event, Submitted):
        return _on_submit(state, event, now, config)
    if isinstance(event, CancelAsked):
        return _on_cancel(state, event, now)
    if isinstance(event, TargetsAsked):
        return [Reply(event.reply_to, _targets(state))]
    if isinstance(event, ComputeAsked):
        return requests.on_compute(state, event, now, config)
    if isinstance(event, AgentAsked):
        return requests.on_agent(state, event, now, config)
    if isinstance(event, TagAsked):
        return run_notes.on_tag_request(state, event.request, event.reply_to)
    if isinstance(event, QueueAsked):
        return queue_view.on_queue(state, event, now)
    return requests.on_why(state, event, now)


def _on_node_event(
    state: SchedulerState, event: NodeEvent, now: float, config: Config
) -> list[Command]:
    if isinstance(event, HeartbeatSeen):
        return _on_heartbeat(state, event.heartbeat, now)
    if isinstance(event, ReportSeen):
        return _on_report(state, event.report)
    if isinstance(event, NoteSeen):
        return run_notes.on_note(state, event.note, now)
    if isinstance(event, MetricsSeen):
        return sweep_runs.on_metrics(state, event)
    if isinstance(event, NodeFailed):
        return nodes.node_failed(state, event, now, config)
    return nodes.node_stopped(state, event.node_id, now)


def _on_vm_event(state: SchedulerState, event: VmEvent, now: float) -> list[Command]:
    if isinstance(event, VmProgress):
        return vms.progress(state, event.name, event.line)
    if isinstance(event, VmAttached):
        return vms.attached(state, event.name, event.remote_port)
    if isinstance(event, VmFailed):
        return vms.failed(state, event.name, event.code, event.message, now)
    if isinstance(event, VmDetached):
        return vms.detached(state, event.name)
    return vms.link(state, event.name, event.link)


def _on_lifecycle(state: SchedulerState, event: LifecycleEvent, now: float) -> list[Command]:
    if isinstance(event, Started):
        state.started_at = now
        sweep_runs.prune(state)
        pipeline_runs.prune(state)
        return nodes.scheduler_started(state, now, event.children_of)
    if isinstance(event, SweepFeedReady):
        state.sweep_feed_ready = True
        return [Log("sweep metrics read up to the start; sweeps go on", {})]
    if isinstance(event, BrokerAway):
        state.broker_away = True
        return [Log("broker unreachable; no agent is judged lost until it is back", {})]
    if isinstance(event, BrokerBack):
        state.broker_away = False
        state.started_at = now
        return [Log("broker reachable again; every agent gets a full lease", {})]
    return []  # Tick: decide() does the periodic work


def _targets(state: SchedulerState) -> m.TargetsReply:
    names = state.known_targets()
    live: dict[str, int] = {}
    for a in state.agents.values():
        if not a.lost:
            live[a.target] = live.get(a.target, 0) + 1
    return m.TargetsReply(
        targets=[
            m.TargetInfo(name=n, kind="local" if n == "local" else "agents", agents=live.get(n, 0))
            for n in sorted(names)
        ]
    )


def _never_fits(
    state: SchedulerState, spec: m.RunSpec, compute: m.ComputeRecord | None = None
) -> str | None:
    """Why no node of the run's target could ever hold it, or None (then it may wait).
    ``compute``: the run's own cluster when it is not stored yet (run-based creation)."""
    if spec.node_count < 1:
        return "node_count must be at least 1"
    if spec.processes_per_node > 1:
        vm = state.vms.get(spec.target)
        if vm is None or not isinstance(vm.vm.engine, SlurmEngine):
            return (
                f"processes_per_node={spec.processes_per_node}: only a Slurm target starts "
                f"several processes per node, and {spec.target!r} is not one; elsewhere Sortie "
                "starts one per node (start more from the script, e.g. with torchrun)"
            )
    res = spec.resources
    ask = f"{res.cpus:g} CPUs, {res.memory_mb} MB, {res.gpus} GPUs" + (
        f" of type {res.gpu_type}" if res.gpu_type else ""
    )
    compute = compute or state.computes.get(spec.target)
    if compute is not None:
        from sortie.scheduler.autoscale import servable

        if spec.node_count > compute.cluster.max_nodes:
            return (
                f"the run needs {spec.node_count} nodes but {compute.name} has at most "
                f"{compute.cluster.max_nodes} (max_nodes)"
            )
        if not servable(compute, spec):
            s = compute.shape
            return (
                f"no node of {compute.name} can hold it: it asks {ask}"
                + (", dedicated nodes" if spec.dedicated_only else "")
                + f"; a {s.name} node has {s.cpus:g} CPUs, {s.memory_mb} MB, {s.gpus} GPUs"
                + (f" ({s.gpu_type})" if s.gpu_type else "")
                + f", {compute.cluster.vm_priority}"
            )
        return None
    agents = [a for a in state.agents.values() if a.target == spec.target and not a.lost]
    if agents and not any(could_ever_hold(a.capacity, spec) for a in agents):
        biggest = max(agents, key=lambda a: (a.capacity.gpus, a.capacity.cpus))
        c = biggest.capacity
        return (
            f"no agent of target {spec.target!r} can hold it: it asks {ask}; the largest, "
            f"{biggest.agent_id}, has {c.cpus:g} CPUs, {c.memory_mb} MB, {c.gpus} GPUs"
            + (f" ({c.gpu_type})" if c.gpu_type else "")
        )
    return None


def _admit(
    state: SchedulerState, ev: Submitted, now: float, config: Config
) -> tuple[m.RunSpec, m.ComputeRecord | None] | m.ErrorReply:
    """The spec as it will be stored (retargeted to its temporary cluster, for run-based
    creation) and that cluster, or why the run is refused."""
    spec = ev.request.spec
    if ev.request.pipeline is not None:
        return _admit_pipeline(state, spec, ev.request.pipeline, ev.request.secret_env)
    temporary: m.ComputeRecord | None = None
    known = state.known_targets()
    if spec.target == targets.RUN_BASED and targets.RUN_BASED not in known:
        made = targets.run_based_cluster(
            spec,
            ev.run_id,
            config,
            set(state.computes) | set(state.vms),
            now,
        )
        if isinstance(made, m.ErrorReply):
            return made
        spec, temporary = made
        known = known | {spec.target}
    problem = (
        check_spec(spec, known)
        or targets.refusal(state, spec.target)
        or check_secrets(spec, ev.request.secret_env)
    )
    if problem is None and (why := _never_fits(state, spec, temporary)) is not None:
        problem = m.ErrorReply(code="bad_request", message=f"refused: {why}")
    if problem is None and ev.request.sweep is not None:
        problem = sweep_runs.refusal(ev.request.spec, ev.request.sweep)
    return problem if problem is not None else (spec, temporary)


def _admit_pipeline(
    state: SchedulerState,
    spec: m.RunSpec,
    request: PipelineRequest,
    secret_env: m.SecretEnv | None,
) -> tuple[m.RunSpec, None] | m.ErrorReply:
    """A pipeline: its own spec (PipelineRequest says which fields count: it runs nothing, so
    its target is not looked at), the graph, then each step's run spec as any run's."""
    known = state.known_targets()
    problem = check_spec(spec, known | {spec.target}) or pipeline_runs.refusal(request)
    for step in request.spec.steps:
        if problem is not None:
            break
        run = step.run
        problem = (
            check_spec(run, known)
            or targets.refusal(state, run.target)
            or check_secrets(run, secret_env)
        )
        if problem is None and (why := _never_fits(state, run)) is not None:
            problem = m.ErrorReply(code="bad_request", message=f"refused: {why}")
        if problem is not None:
            problem = msgspec.structs.replace(
                problem, message=f"step {step.name}: {problem.message}"
            )
    return problem if problem is not None else (spec, None)


def _on_submit(state: SchedulerState, ev: Submitted, now: float, config: Config) -> list[Command]:
    admitted = _admit(state, ev, now, config)
    if isinstance(admitted, m.ErrorReply):
        return [Reply(ev.reply_to, admitted)]
    spec, temporary = admitted
    if ev.request.validate_only:
        return [Reply(ev.reply_to, m.SubmitValid(target=spec.target))]
    if spec.submission_id is not None and spec.submission_id in state.submissions:
        existing = state.submissions[spec.submission_id]
        return [Reply(ev.reply_to, m.SubmitAccepted(run_id=existing, created=False))]
    if ev.request.sweep is not None:  # a sweep run: its trials are submitted by decide()
        sweep_runs.create(state, ev.run_id, spec, ev.request.sweep, now)
    elif ev.request.pipeline is not None:  # a pipeline run: its steps are, too
        pipeline_runs.create(state, ev.run_id, spec, ev.request.pipeline, now, images=ev.images)
    else:
        rec = m.RunRecord(
            run_id=ev.run_id,
            spec=spec,
            state=RunState.QUEUED,
            attempt=1,
            created_at=now,
            history=[m.StateChange(state=RunState.QUEUED, at=now, attempt=1)],
            tags=dict(spec.tags),
        )
        store(state, rec)
    kept: list[Command] = []
    if temporary is not None:
        state.computes.put(temporary.name, temporary)
        kept.append(Log("compute created for a run", {"compute": temporary.name}))
    if spec.submission_id is not None:
        state.submissions[spec.submission_id] = ev.run_id
    if ev.request.secret_env is not None and spec.secret_env_names:
        kept.append(SaveRunSecret(run_id=ev.run_id, secret=ev.request.secret_env))
    return [
        *kept,
        Reply(ev.reply_to, m.SubmitAccepted(run_id=ev.run_id), run_id=ev.run_id),
        Log(_accepted(ev.request), {"run_id": ev.run_id, "target": spec.target}),
    ]


def _accepted(request: m.SubmitRequest) -> str:
    if request.sweep is not None:
        return "sweep accepted"
    return "pipeline accepted" if request.pipeline is not None else "run queued"


def _on_cancel(state: SchedulerState, ev: CancelAsked, now: float) -> list[Command]:
    rec = state.runs.get(ev.run_id)
    if rec is None:
        return [Reply(ev.reply_to, m.ErrorReply(code="not_found", message=f"no run {ev.run_id!r}"))]
    if rec.state in TERMINAL:
        return [
            Reply(
                ev.reply_to,
                m.ErrorReply(
                    code="invalid_state", message=f"run {ev.run_id} already ended: {rec.state}"
                ),
            )
        ]
    cmds: list[Command] = []
    if rec.sweep is not None:
        sweep_runs.cancel_sweep(state, rec, now, cmds)
    elif rec.pipeline is not None:
        pipeline_runs.cancel_pipeline(state, rec, now, cmds)
    else:
        cancel(state, rec, now, cmds)
    current = state.runs[ev.run_id].state
    cmds.append(
        Reply(ev.reply_to, m.CancelAccepted(run_id=ev.run_id, state=current), run_id=ev.run_id)
    )
    return cmds


def _on_heartbeat(state: SchedulerState, hb: m.Heartbeat, now: float) -> list[Command]:
    known = state.agents.get(hb.agent_id)
    same = known is not None and known.incarnation == hb.incarnation and not known.lost
    if not hb.listed:
        if not same or known is None or not known.confirmed or known.listing != hb.listing:
            # its listing is the one in a full heartbeat this scheduler did not hear (lost,
            # or sent to the previous leader): judged from its next full one, which comes
            # within agents.core.FULL_LISTING_EVERY beats; a confirmed agent stays alive meanwhile
            if same and known is not None and known.confirmed:
                known.last_seen = now
            return []
        running, finished = known.running, known.finished
    else:
        running = frozenset((r.run_id, r.attempt) for r in hb.running)
        finished = frozenset((r.run_id, r.attempt) for r in hb.finished)
    nodes.node_registered(state, hb.agent_id, now)
    if same and known is not None:
        changed = (
            known.labels != hb.labels
            or known.priority != hb.priority
            or known.preempting != hb.preempting
            or known.container_engine != hb.container_engine
            or known.isolation != hb.isolation
            or known.engine != hb.engine
            or not known.confirmed
        )
        if running != known.running or finished != known.finished:
            _listing_changed(state, hb.agent_id, known, running, finished)
        known.last_seen = now
        known.listing = hb.listing
        known.running = running
        known.finished_since = {k: known.finished_since.get(k, now) for k in finished}
        known.finished = finished
        known.capacity = hb.capacity
        known.gpus = list(hb.gpus)
        known.labels = dict(hb.labels)
        known.priority = hb.priority
        known.container_engine = hb.container_engine
        known.isolation = hb.isolation
        known.engine = hb.engine
        known.preempting = known.preempting or hb.preempting
        known.confirmed = True
        if changed:
            state.agents.touch(hb.agent_id)
        return []
    if hb.agent_id in state.retired:
        # a detached machine's (or deleted node's) agent still talking: it is told to stop
        retire = m.Retire(reason=f"agent {hb.agent_id}'s target {hb.target} was removed")
        return [SendToAgent(hb.agent_id, retire, None)]
    node = state.nodes.get(hb.agent_id)
    if node is not None and node.state in ("stopped", "failed"):
        # a node we stopped or gave up on is still talking: keep it out of placement
        return [Log("heartbeat from a retired node ignored", {"agent_id": hb.agent_id})]
    # a new incarnation (or agent): every run it had, and everything it lists, judged again
    state.relisted.update(dict.fromkeys(state.runs.on(hb.agent_id)))
    state.relisted.update(dict.fromkeys(run_id for run_id, _ in running | finished))
    state.newly_listed += [(hb.agent_id, ref) for ref in running]
    state.agents.put(
        hb.agent_id,
        AgentView(
            agent_id=hb.agent_id,
            incarnation=hb.incarnation,
            target=hb.target,
            hostname=hb.hostname,
            capacity=hb.capacity,
            first_seen=now if known is None else known.first_seen,
            last_seen=now,
            running=running,
            finished=finished,
            finished_since=dict.fromkeys(finished, now),
            listing=hb.listing,
            # an operator's cordon and drain survive an agent restart
            cordoned=known.cordoned if known is not None else False,
            draining=known.draining if known is not None else False,
            preempting=hb.preempting,
            labels=dict(hb.labels),
            priority=hb.priority,
            gpus=list(hb.gpus),
            container_engine=hb.container_engine,
            isolation=hb.isolation,
            engine=hb.engine,
        ),
    )
    return [
        Log(
            "agent joined" if known is None else "agent restarted",
            {"agent_id": hb.agent_id, "target": hb.target, "incarnation": hb.incarnation},
        )
    ]


def _listing_changed(
    state: SchedulerState,
    agent_id: str,
    known: AgentView,
    running: frozenset[tuple[str, int]],
    finished: frozenset[tuple[str, int]],
) -> None:
    """Note what reconciliation must judge again: the runs whose listing changed, and the
    attempts newly listed as running (each may be stale)."""
    changed = (running ^ known.running) | (finished ^ known.finished)
    state.relisted.update(dict.fromkeys(run_id for run_id, _ in changed))
    state.newly_listed += [(agent_id, ref) for ref in running - known.running]


def _stale(report: m.RunReport) -> list[Command]:
    if report.state in TERMINAL:
        return []
    return [
        SendToAgent(
            report.agent_id,
            m.Cancel(run_id=report.run_id, attempt=report.attempt, reason="stale"),
            report.run_id,
        ),
        Log(
            "stale report refused",
            {"run_id": report.run_id, "attempt": report.attempt, "agent_id": report.agent_id},
        ),
    ]


PROGRESS = (
    RunState.PREPARING,
    RunState.STARTING,
    RunState.RUNNING,
    RunState.FINALIZING,
    RunState.COMPLETED,
)


def _skipped_steps(current: RunState, reported: RunState) -> list[RunState]:
    """The progress steps between ``current`` and a ``reported`` state further along that
    cannot be reached directly (Running -> Completed implies Finalizing): empty otherwise."""
    if can_transition(current, reported) or current not in PROGRESS or reported not in PROGRESS:
        return []
    here, there = PROGRESS.index(current), PROGRESS.index(reported)
    return list(PROGRESS[here + 1 : there]) if there > here else []


def _on_report(state: SchedulerState, rep: m.RunReport) -> list[Command]:
    """A member's report. The run follows its slowest member; any failure ends the attempt."""
    rec = state.runs.get(rep.run_id)
    if rec is None or rec.attempt != rep.attempt or rec.state not in ON_AGENT:
        return _stale(rep)
    gang = members(rec)
    member = next((g for g in gang if g.agent_id == rep.agent_id), None)
    if member is None:
        return _stale(rep)
    if (job := with_engine_job(rec, rep)) is not rec:
        store(state, job)  # kept even when the report moves nothing (a new Slurm reason)
        rec = job
    skipped = _skipped_steps(member.state, rep.state)
    if skipped:
        # An agent reports each step in order, but a redelivery (after a scheduler restart)
        # may bring a later one first: it implies the steps before it. Dropping it would lose
        # the outcome for good (it is acknowledged like any other).
        implied: list[Command] = []
        for step in skipped:
            earlier = msgspec.structs.replace(
                rep, state=step, exit_code=None, error=None, artifacts=[]
            )
            implied.extend(_on_report(state, earlier))
        return implied + _on_report(state, rep)
    if rep.state == member.state or not can_transition(member.state, rep.state):
        return []  # a duplicate, or a report this member has already moved past
    if rep.state is RunState.QUEUED and member.state is RunState.FINALIZING:
        return []  # a finished script is never given back by its agent
    if rep.state in (RunState.FAILED, RunState.CANCELED, RunState.QUEUED):
        return _attempt_over(state, rec, gang, member, rep)
    return _member_moved(state, rec, gang, member, rep)


def _attempt_over(
    state: SchedulerState,
    rec: m.RunRecord,
    gang: list[m.GangMember],
    member: m.GangMember,  # one of ``gang`` (compared by identity)
    rep: m.RunReport,
) -> list[Command]:
    """A member failed, was canceled or gave its run back: the attempt ends for every node."""
    cmds: list[Command] = []
    if len(gang) > 1 and rep.error is not None:
        error = m.RunError(kind=rep.error.kind, message=f"rank {member.rank}: {rep.error.message}")
        rep = msgspec.structs.replace(rep, error=error)
    apply_report(state, rec, rep, cmds)
    # the attempt is over for every node: stop the others now
    cmds.extend(
        SendToAgent(
            g.agent_id,
            m.Cancel(run_id=rec.run_id, attempt=rec.attempt, reason="stale"),
            rec.run_id,
        )
        for g in gang
        if g is not member and g.state not in TERMINAL
    )
    return cmds


def _member_moved(
    state: SchedulerState,
    rec: m.RunRecord,
    gang: list[m.GangMember],
    member: m.GangMember,  # one of ``gang`` (compared by identity)
    rep: m.RunReport,
) -> list[Command]:
    """A member moved a step on: the run moves when its slowest member does."""
    new_gang = [msgspec.structs.replace(g, state=rep.state) if g is member else g for g in gang]
    slowest = min((g.state for g in new_gang), key=PROGRESS.index)
    changes: dict[str, object] = {"gang": new_gang}
    if member.rank == 0 and rep.state is RunState.COMPLETED:
        changes["artifacts"] = rep.artifacts  # rank 0's outputs are the run's
        changes["data_outputs"] = rep.data_outputs  # and its pipeline data
        changes["image_id"] = rep.image_id  # and the image it ran
    updated = msgspec.structs.replace(rec, **changes)
    if slowest == rec.state:
        store(state, updated)
        return []
    summary = msgspec.structs.replace(
        rep,
        state=slowest,
        artifacts=updated.artifacts,
        data_outputs=updated.data_outputs,
        image_id=updated.image_id,
        exit_code=rep.exit_code if slowest is RunState.COMPLETED else None,
    )
    cmds: list[Command] = []
    apply_report(state, updated, summary, cmds)
    return cmds


# --- the periodic decision -------------------------------------------------------------------


def decide(
    state: SchedulerState,
    now: float,
    config: Config,
    new_node_id: nodes.NodeIds | None = None,
) -> list[Command]:
    """Reconcile observations with records, scale clusters, then place what is queued."""
    for run_id in state.assigns_out:  # published since the last cycle: sent by now
        if run_id in state.assign_sent_at:
            state.assign_sent_at[run_id] = now
    state.assigns_out.clear()
    cmds = _apply_reconciliation(state, reconciliation(state, now, config), now)
    for name in targets.ended_temporaries(state):
        cmds += targets.delete_temporary(state, name)
    if state.computes:
        cmds += nodes.step_clusters(state, now, config, new_node_id or _no_ids)
    if state.sweeps:  # before placement: new trials are placed in this same pass
        sweep_runs.step_sweeps(state, now, cmds)
    if state.pipelines:  # before placement too: new steps are placed in this same pass
        pipeline_runs.step_pipelines(state, now, cmds)

    _time_out(state, now, cmds)
    if not state.runs.queued_count:
        state.why = Waits()
        return cmds
    queue = state.runs
    plan: Plan = place_queue(
        queue.queued(), queue.classes, slots(state), limit=config.placement_limit
    )
    for p in plan.placements:
        cmds += _assign_placed(state, p, now)
    state.why = plan.waits
    for rec, wait in targets.waiting_changes(state):
        store(state, msgspec.structs.replace(rec, waiting=wait))
    # placements are counted in the daemon's one line per cycle (scheduler.metrics)
    return cmds


def reconciliation(state: SchedulerState, now: float, config: Config) -> Reconciliation:
    """Reconcile what changed since the last time (``reconcile.Scope``: the table's marks and
    the heartbeats' changes, taken here); the state keeps what to judge again next time."""
    touched, left = state.runs.take_touched()
    scope = Scope(
        runs=[*state.unsettled, *touched, *state.relisted],
        held=[*state.stale_held, *left, *state.newly_listed],
        on=state.runs.on,
    )
    state.relisted = {}
    state.newly_listed = []
    rec_out = reconcile(
        state.runs,
        state.agents,
        state.assign_sent_at,
        now=now,
        started_at=now if state.broker_away else state.started_at,  # away: nobody is judged lost
        timing=config.timing,
        scope=scope,
    )
    state.unsettled = rec_out.unsettled
    state.stale_held = [(a, (ref.run_id, ref.attempt)) for a, ref in rec_out.stop_stale]
    return rec_out


def _time_out(state: SchedulerState, now: float, cmds: list[Command]) -> None:
    """Fail the queued runs past their queue timeout (kind queue_timeout, naming why they
    waited)."""
    for rec in targets.timed_out(state.runs.timed(), now):
        waited = now - (rec.history[-1].at if rec.history else rec.created_at)
        message = (
            f"still queued after {waited:.0f}s (queue timeout {rec.spec.queue_timeout_s:g}s): "
            + requests.queue_summary(state, rec, now).removeprefix("queued: ")
        )
        err = m.RunError(kind=ErrorKind.QUEUE_TIMEOUT, message=message)
        end(state, rec, RunState.FAILED, now, cmds, error=err, waiting=None)


def _apply_reconciliation(
    state: SchedulerState, rec_out: Reconciliation, now: float
) -> list[Command]:
    """Carry out reconcile's buckets on the state: lost agents, requeued, failed and canceled
    runs, Assigns sent again, stale attempts stopped."""
    cmds: list[Command] = []
    for agent_id in rec_out.lost_agents:
        state.agents[agent_id].lost = True
        state.agents.touch(agent_id)
        cmds.append(Log("agent lost", {"agent_id": agent_id}))
    for run_id, why in rec_out.requeue:
        moved = requeue(state, state.runs[run_id], why, now)
        cmds.append(Log("run requeued", {"run_id": run_id, "attempt": moved.attempt, "why": why}))
    for run_id, err in rec_out.fail:
        end(state, state.runs[run_id], RunState.FAILED, now, cmds, error=err)
    for run_id in rec_out.cancel:
        end(state, state.runs[run_id], RunState.CANCELED, now, cmds)
    for run_id, rank in rec_out.resend:
        rec = state.runs[run_id]
        member = members(rec)[rank]
        state.assign_sent_at[run_id] = now
        state.assigns_out.append(run_id)
        cmds.append(SendToAgent(member.agent_id, _assign(rec, member), run_id))
    for agent_id, ref in rec_out.stop_stale:
        cmds.append(
            SendToAgent(
                agent_id,
                m.Cancel(run_id=ref.run_id, attempt=ref.attempt, reason="stale"),
                ref.run_id,
            )
        )
    return cmds


def _assign_placed(state: SchedulerState, p: Placement, now: float) -> list[Command]:
    """Move a placed run to Preparing with its gang, and send each member its Assign."""
    rec = state.runs[p.run_id]
    shared = state.shared  # a million runs placed hold one gang, writer and change per agent
    gang = [
        shared.one(
            m.GangMember(
                rank=rank,
                agent_id=agent_id,
                incarnation=state.agents[agent_id].incarnation,
                hostname=state.agents[agent_id].hostname,
            )
        )
        for rank, agent_id in enumerate(p.agent_ids)
    ]
    writers = [
        shared.one(m.Writer(attempt=rec.attempt, rank=g.rank, agent_id=g.agent_id)) for g in gang
    ]
    moved = move(
        rec,
        RunState.PREPARING,
        now,
        shared=shared,
        agent_id=gang[0].agent_id,
        agent_incarnation=gang[0].incarnation,
        assigned_at=now,
        gang=shared.list_of(gang[0]) if len(gang) == 1 else gang,
        waiting=None,
        master_port=shared.one(rendezvous_port(rec.run_id)),
        writers=shared.list_of(writers[0])
        if not rec.writers and len(writers) == 1
        else [*rec.writers, *writers],
    )
    store(state, moved)
    state.assign_sent_at[p.run_id] = now
    state.assigns_out.append(p.run_id)
    return [SendToAgent(g.agent_id, _assign(moved, g), p.run_id) for g in gang]


def _no_ids(cluster: str) -> str:
    raise RuntimeError(f"decide() needs new_node_id to scale cluster {cluster}")


def rendezvous_port(run_id: str) -> int:
    """MASTER_PORT for a run: stable for its id, in 29500-30499 (a collision is unlikely)."""
    return 29500 + zlib.crc32(run_id.encode()) % 1000


def _assign(rec: m.RunRecord, member: m.GangMember) -> m.Assign:
    gang = members(rec)
    return m.Assign(
        run_id=rec.run_id,
        attempt=rec.attempt,
        incarnation=member.incarnation,
        spec=rec.spec,
        rank=member.rank,
        world_size=len(gang),
        master_addr=gang[0].hostname or None,
        master_port=rec.master_port,
        hosts=[g.hostname for g in gang],
        short_heartbeats=True,  # _on_heartbeat reads them
    )


def forget_finished(state: SchedulerState, run_id: str) -> None:
    """Drop a run whose terminal record has been stored (called by the daemon)."""
    rec = state.runs.get(run_id)
    if rec is not None and rec.state in TERMINAL:
        state.runs.forget(run_id)
