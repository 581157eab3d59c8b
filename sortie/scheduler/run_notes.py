"""Tags, properties and child runs: what a script's notes and a client's tag request change.

Pure: records in, records out. A note is applied only when its agent holds the run's current
attempt (the rule reports follow), and it may name only that run or a child of it, so an
agent cannot touch another agent's run. A child run has no attempt of its own: it is
created Running, moves on when its script says so, and ends with its parent
(:func:`end_children`, from ``runs.finish``).
"""

from __future__ import annotations

import msgspec

from sortie.proto import messages as m
from sortie.proto import notes as n
from sortie.proto.gang import agent_ids
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import ON_AGENT, TERMINAL, RunState, can_transition
from sortie.proto.subjects import check_token
from sortie.scheduler.events import Command, Log, Reply
from sortie.scheduler.model import SchedulerState, ends_with_parent


def with_entries(rec: m.RunRecord, tags: dict[str, str], properties: dict[str, str]) -> m.RunRecord:
    """``rec`` with ``tags`` set (a key given again takes the new value) and ``properties``
    added (a property once set keeps its value, as on the hosted platform)."""
    new_props = {k: v for k, v in properties.items() if k not in rec.properties}
    if not tags and not new_props:
        return rec
    return msgspec.structs.replace(
        rec, tags={**rec.tags, **tags}, properties={**rec.properties, **new_props}
    )


def tag_refusal(rec: m.RunRecord, req: n.RunTagRequest) -> str | None:
    """Why a client's tag request cannot be applied to ``rec`` (None: it can)."""
    why = n.check_entries("tag", req.tags) or n.check_entries("property", req.properties)
    if why is not None:
        return why
    clash = sorted(
        k for k, v in req.properties.items() if k in rec.properties and rec.properties[k] != v
    )
    if clash:
        return (
            f"run {rec.run_id} already has properties {', '.join(clash)} with other values; "
            "a property cannot be changed once set (use a tag for a value that changes)"
        )
    return None


def on_tag_request(state: SchedulerState, req: n.RunTagRequest, reply_to: str) -> list[Command]:
    """A client's tag request for a run in memory (the daemon serves stored, ended runs)."""
    rec = state.runs.get(req.run_id)
    if rec is None:
        return [Reply(reply_to, m.ErrorReply(code="not_found", message=f"no run {req.run_id!r}"))]
    why = tag_refusal(rec, req)
    if why is not None:
        return [Reply(reply_to, m.ErrorReply(code="bad_request", message=why))]
    updated = with_entries(rec, req.tags, req.properties)
    if updated is not rec:
        state.runs.put(updated.run_id, updated)
    return [Reply(reply_to, n.RunTagged(record=updated))]


def _refused(note: n.RunNote, why: str) -> list[Command]:
    return [
        Log(
            "run note refused",
            {"run_id": note.run_id, "agent_id": note.agent_id, "why": why},
        )
    ]


def _holder_refusal(rec: m.RunRecord | None, note: n.RunNote) -> str | None:
    if rec is None or rec.state not in ON_AGENT or rec.sweep is not None:
        return "the run is not running"
    if rec.pipeline is not None or ends_with_parent(rec):  # no attempt of its own
        return "the run is not running"
    if rec.attempt != note.attempt or note.agent_id not in agent_ids(rec):
        return "the agent does not hold the run's current attempt"
    return None


def on_note(state: SchedulerState, note: n.RunNote, now: float) -> list[Command]:
    """Apply what a script said, if its agent holds the run's attempt."""
    parent = state.runs.get(note.run_id)
    why = _holder_refusal(parent, note)
    if why is not None or parent is None:
        return _refused(note, why or "no such run")
    body = note.note
    if isinstance(body, n.ChildStarted):
        return _child_started(state, parent, body, now)
    target = _target(state, parent, body.run)
    if target is None:
        return _refused(note, f"run {body.run!r} is not a child of {parent.run_id}")
    if isinstance(body, n.ChildEnded):
        return _child_ended(state, target, body, now)
    if isinstance(body, n.TagsSet):
        why = n.check_entries("tag", body.tags)
        updated = with_entries(target, body.tags, {})
    else:
        why = n.check_entries("property", body.properties)
        updated = with_entries(target, {}, body.properties)
    if why is not None:
        return _refused(note, why)
    if updated is not target:
        state.runs.put(updated.run_id, updated)
    return []


def _target(state: SchedulerState, parent: m.RunRecord, run: str | None) -> m.RunRecord | None:
    if run is None or run == parent.run_id:
        return parent
    child = state.runs.get(run)
    return child if child is not None and child.parent_id == parent.run_id else None


def child_id_refusal(parent_id: str, child_id: str) -> str | None:
    """A child's id is ``<parent>_<suffix>``, subject-safe."""
    try:
        check_token("run id", child_id)
    except ValueError as exc:
        return str(exc)
    if not child_id.startswith(f"{parent_id}_") or child_id == f"{parent_id}_":
        return f"child id {child_id!r} must be {parent_id}_<suffix>"
    return None


def _child_started(
    state: SchedulerState, parent: m.RunRecord, body: n.ChildStarted, now: float
) -> list[Command]:
    why = child_id_refusal(parent.run_id, body.id)
    if why is not None:
        return [Log("run note refused", {"run_id": parent.run_id, "why": why})]
    if body.id in state.runs:
        return []  # a redelivered note
    spec = msgspec.structs.replace(
        parent.spec, submission_id=None, secret_env_names=[], tags={}, env_vars={}
    )
    child = m.RunRecord(
        run_id=body.id,
        spec=spec,
        state=RunState.RUNNING,
        attempt=parent.attempt,
        created_at=now,
        started_at=now,
        history=[m.StateChange(state=RunState.RUNNING, at=now, attempt=parent.attempt)],
        parent_id=parent.run_id,
        properties={"name": body.name} if body.name else {},
    )
    state.runs.put(child.run_id, child)
    state.children.setdefault(parent.run_id, set()).add(child.run_id)
    return [Log("child run started", {"run_id": child.run_id, "parent_id": parent.run_id})]


def _ended(child: m.RunRecord, final: RunState, now: float, reason: str | None) -> m.RunRecord:
    """``child`` moved to ``final`` through the steps the lifecycle allows."""
    history = list(child.history)
    current = child.state
    for step in (RunState.FINALIZING, final):
        if current in TERMINAL or not can_transition(current, step):
            continue
        history.append(m.StateChange(state=step, at=now, attempt=child.attempt, reason=reason))
        current = step
    return msgspec.structs.replace(child, state=current, history=history, ended_at=now)


def _child_ended(
    state: SchedulerState, child: m.RunRecord, body: n.ChildEnded, now: float
) -> list[Command]:
    if child.parent_id is None or child.state in TERMINAL:
        return []  # the script's own run ends by its agent's reports; an ended child stays
    final = RunState.COMPLETED if body.state == "Completed" else RunState.FAILED
    ended = _ended(child, final, now, None)
    if final is RunState.FAILED:
        ended = msgspec.structs.replace(
            ended,
            error=m.RunError(
                kind=ErrorKind.EXIT_CODE, message=body.error or "failed by its script"
            ),
        )
    state.runs.put(ended.run_id, ended)
    return [Log("child run ended", {"run_id": child.run_id, "state": ended.state})]


def end_children(state: SchedulerState, parent: m.RunRecord, now: float) -> None:
    """The parent ended: its children still running end as it did."""
    for child_id in sorted(state.children.pop(parent.run_id, set())):
        child = state.runs.get(child_id)
        if child is None or child.state in TERMINAL:
            continue
        final = parent.state if parent.state in TERMINAL else RunState.FAILED
        state.runs.put(child_id, _ended(child, final, now, f"parent {parent.state}"))
