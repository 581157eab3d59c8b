"""The agent's decisions, apart from its I/O: ``handle(state, event, now) -> commands``.

Like the scheduler's core: pure (no broker, no tasks, no clock: ``now`` is passed in, wall
seconds), and it owns :class:`AgentState`, which it changes in place. What it decides:

- an assignment is taken only for this incarnation, while not preempting, once per
  (run, attempt), and never older than the attempt the run holds; a newer attempt of a run
  replaces the older one (which the new attempt stops first, as stale);
- an assignment or cancel from an older leader epoch than the newest seen (in a command,
  or in a new leader's HeartbeatNow) is refused (a deposed scheduler that has not noticed
  yet acts on nothing);
- a cancel stops the run's attempt unless it is newer than the one named; a stale cancel
  stops it as "disowned" (reported, given back), so the end of an attempt the scheduler may
  still hold is never silent;
- a preemption notice or a lapsed lease stops every attempt held (given back: "preempted",
  "fenced");
- when the container engine first answers, containers of attempts not held are removed; a
  known engine that misses a probe stays advertised until several misses in a row
  (``agents.engine_health``);
- what finished is remembered for heartbeats (``finished``) for a while, bounded;
- whether a heartbeat lists what is held and finished in full or by its digest only
  (:func:`heartbeat_listing`): in full when the listing changed, when a new leader asks, every
  ``FULL_LISTING_EVERY`` beats, and always unless the newest leader reads short heartbeats.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass, field

from sortie.agents.engine_health import EngineHealth, probed
from sortie.agents.events import (
    Assigned,
    AttemptEnded,
    CancelAsked,
    Command,
    CommandRefused,
    EngineProbed,
    Event,
    LeaderSeen,
    LeaseLapsed,
    Note,
    PreemptNoticed,
    RemoveOrphans,
    StartAttempt,
    StopAttempt,
    StopReason,
    Tick,
)
from sortie.proto import messages as m

SEEN_CAP = 10_000
# a heartbeat lists in full at least every this many beats: a scheduler that missed the last
# full listing (a lost message, a new leader the agent's HeartbeatNow did not reach) has it
# again well within an agent's lease and kill grace
FULL_LISTING_EVERY = 10
MAX_BAD_COMMANDS_LOGGED = 20  # a flood of bad commands must not flood the log

Key = tuple[str, int]  # (run id, attempt)


@dataclass
class AgentState:
    """What one agent incarnation holds: attempts in flight, and what it finished."""

    incarnation: str
    finished_keep_s: float  # how long a finished attempt stays in heartbeats
    finished_cap: int  # and how many at most
    running: dict[str, int] = field(default_factory=dict)  # run_id -> current attempt
    finished: collections.OrderedDict[Key, float] = field(
        default_factory=collections.OrderedDict
    )  # (run_id, attempt) -> finished at
    seen: collections.OrderedDict[Key, None] = field(default_factory=collections.OrderedDict)
    bad_commands: int = 0
    preempting: bool = False  # a Preempt arrived: no new runs are taken
    container_engine: str | None = None  # what the engine said it is, None: no answer
    engine: EngineHealth = field(default_factory=EngineHealth)  # the probes' answers so far
    epoch: int = 0  # the newest leader epoch an Assign or Cancel came with
    short_heartbeats: bool = False  # that leader reads heartbeats without their listing
    listed: str = ""  # the digest of the listing last sent in full
    short_beats: int = 0  # heartbeats sent since, without it


def handle(state: AgentState, event: Event, now: float) -> list[Command]:
    """Apply ``event`` to ``state``; return what the shell must do, in order."""
    match event:
        case Assigned(assign=assign):
            return _older_leader(state, assign) or _assigned(state, assign)
        case CancelAsked(cancel=cancel):
            return _older_leader(state, cancel) or _cancel_asked(state, cancel)
        case PreemptNoticed(reason=reason):
            return _preempt_noticed(state, reason)
        case AttemptEnded(run_id=run_id, attempt=attempt):
            _attempt_ended(state, (run_id, attempt), now)
        case LeaseLapsed(why=why):
            note = Note(level="warning", message=why, fields={"running": len(state.running)})
            return [note, *_stop_all(state, "fenced")]
        case EngineProbed(engine=engine):
            return _engine_probed(state, engine)
        case CommandRefused(error=error, size=size):
            return _command_refused(state, error, size)
        case LeaderSeen(epoch=epoch, short_heartbeats=short):
            if epoch >= state.epoch:
                state.epoch = epoch
                state.short_heartbeats = short
        case Tick():
            _prune_finished(state, now)
    return []  # what changes only the state


def _older_leader(state: AgentState, cmd: m.Assign | m.Cancel) -> list[Command]:
    """Refuse (with a note) a command from an older leader epoch than the newest seen;
    otherwise remember its epoch and return nothing."""
    if cmd.epoch >= state.epoch:
        state.epoch = cmd.epoch
        if isinstance(cmd, m.Assign):
            state.short_heartbeats = cmd.short_heartbeats
        return []
    return [
        Note(
            level="warning",
            message=f"{type(cmd).__name__.lower()} from an older leader refused",
            fields={
                "run_id": cmd.run_id,
                "attempt": cmd.attempt,
                "epoch": cmd.epoch,
                "leader_epoch": state.epoch,
            },
        )
    ]


def _cancel_asked(state: AgentState, cancel: m.Cancel) -> list[Command]:
    current = state.running.get(cancel.run_id)
    if current is None or current > cancel.attempt:
        return []  # unknown run, or a newer attempt than the one to stop
    note = Note(
        level="info",
        message="cancel received",
        fields={"run_id": cancel.run_id, "attempt": cancel.attempt, "reason": cancel.reason},
    )
    # stopped on the scheduler's word, an attempt's end is always reported: the scheduler
    # refuses the report of an attempt it has moved past, and requeues one it still holds
    # (a stale cancel it never sent, or one for an attempt its record is still on)
    reason: StopReason = "disowned" if cancel.reason == "stale" else cancel.reason
    return [note, StopAttempt(run_id=cancel.run_id, attempt=current, reason=reason)]


def _preempt_noticed(state: AgentState, reason: str) -> list[Command]:
    notes: list[Command] = []
    if not state.preempting:
        notes.append(
            Note(
                level="warning",
                message="preemption notice: stopping every run",
                fields={"reason": reason},
            )
        )
    state.preempting = True
    return notes + _stop_all(state, "preempted")


def _attempt_ended(state: AgentState, key: Key, now: float) -> None:
    run_id, attempt = key
    if state.running.get(run_id) == attempt:
        del state.running[run_id]
    state.finished[key] = now
    state.finished.move_to_end(key)


def _command_refused(state: AgentState, error: str, size: int) -> list[Command]:
    state.bad_commands += 1
    if state.bad_commands > MAX_BAD_COMMANDS_LOGGED:
        return []
    fields: dict[str, object] = {"error": error[:300], "size": size}
    return [Note(level="warning", message="bad command ignored", fields=fields)]


def _assigned(state: AgentState, assign: m.Assign) -> list[Command]:
    key = (assign.run_id, assign.attempt)
    about: dict[str, object] = {"run_id": assign.run_id, "attempt": assign.attempt}
    if assign.incarnation != state.incarnation:
        return [
            Note(level="info", message="assignment for another incarnation ignored", fields=about)
        ]
    if state.preempting:
        return [
            Note(
                level="info",
                message="assignment ignored: this node is being preempted",
                fields=about,
            )
        ]
    if key in state.seen or key in state.finished:
        return []  # a resend
    previous = state.running.get(assign.run_id)
    if previous is not None and previous > assign.attempt:
        return [
            Note(
                level="info",
                message="assignment older than the attempt running ignored",
                fields=about,
            )
        ]
    state.seen[key] = None
    while len(state.seen) > SEEN_CAP:
        state.seen.popitem(last=False)
    state.running[assign.run_id] = assign.attempt
    note = Note(
        level="info", message="attempt assigned", fields={**about, "script": assign.spec.script}
    )
    return [note, StartAttempt(assign=assign, replaces=previous)]


def _stop_all(state: AgentState, reason: StopReason) -> list[Command]:
    return [StopAttempt(run_id=r, attempt=a, reason=reason) for r, a in state.running.items()]


def _engine_probed(state: AgentState, answer: str | None) -> list[Command]:
    was = state.container_engine
    state.engine = probed(state.engine, answer)
    engine = state.container_engine = state.engine.advertised
    out: list[Command] = []
    if state.engine.unknown:
        out.append(
            Note(
                level="warning",
                message="container engine did not answer its probe; still advertised",
                fields={"engine": engine, "misses": state.engine.misses},
            )
        )
    if engine != was:
        out.append(Note(level="info", message="container engine", fields={"engine": engine}))
    if engine is not None and was is None:
        out.append(RemoveOrphans(keep=frozenset(state.running.items())))
    return out


def _prune_finished(state: AgentState, now: float) -> None:
    for key, at in list(state.finished.items()):
        if now - at > state.finished_keep_s:
            del state.finished[key]
    while len(state.finished) > state.finished_cap:
        state.finished.popitem(last=False)


@dataclass(frozen=True)
class Listing:
    """What a heartbeat says of the attempts held and finished (``m.Heartbeat``)."""

    running: list[m.RunRef]
    finished: list[m.RunRef]
    digest: str
    listed: bool  # False: ``running`` and ``finished`` are left out (empty)


def listing_digest(running: list[m.RunRef], finished: list[m.RunRef]) -> str:
    """A digest of a listing (both lists sorted), the same for the same listing anywhere."""
    h = hashlib.blake2b(digest_size=12)
    for name, refs in (("r", running), ("f", finished)):
        h.update(name.encode())
        for ref in refs:
            h.update(f"\0{ref.run_id}\0{ref.attempt}".encode())
    return h.hexdigest()


def heartbeat_listing(state: AgentState, *, asked: bool) -> Listing:
    """The next heartbeat's listing, in full or by digest only (see the module's notes);
    ``asked``: a leader asked for this heartbeat (HeartbeatNow)."""
    running = [m.RunRef(run_id=r, attempt=a) for r, a in sorted(state.running.items())]
    finished = [m.RunRef(run_id=r, attempt=a) for r, a in sorted(state.finished)]
    digest = listing_digest(running, finished)
    full = (
        asked
        or not state.short_heartbeats
        or digest != state.listed
        or state.short_beats + 1 >= FULL_LISTING_EVERY
    )
    if full:
        state.listed, state.short_beats = digest, 0
        return Listing(running=running, finished=finished, digest=digest, listed=True)
    state.short_beats += 1
    return Listing(running=[], finished=[], digest=digest, listed=False)
