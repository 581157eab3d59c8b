"""What happens to an agent (events) and what its core asks the shell to do (commands).

The closed sets :data:`Event` and :data:`Command` of :func:`agents.core.handle`: the shell
(:mod:`agents.daemon`) turns broker messages, attempt exits and timers into events, and
carries out the commands (starting and stopping attempts, removing orphaned containers,
logging). Plain frozen values: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sortie.proto import messages as m

# why an attempt is stopped (agents.attempt turns it into the run's report); "stale": replaced
# by a newer attempt of its run; "disowned": a stale cancel from the scheduler, so the end is
# reported (given back) instead of leaving a record that may still hold it active;
# "early_terminated": a sweep's policy stopped the trial (a cancel the script can tell apart)
StopReason = Literal[
    "canceled", "stale", "disowned", "shutdown", "preempted", "fenced", "early_terminated"
]

# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Assigned:
    """The scheduler gave this agent an attempt (a checked :class:`~proto.messages.Assign`)."""

    assign: m.Assign


@dataclass(frozen=True, kw_only=True)
class CancelAsked:
    """The scheduler asked for an attempt to be stopped (canceled, or stale)."""

    cancel: m.Cancel


@dataclass(frozen=True, kw_only=True)
class PreemptNoticed:
    """The node is about to be taken away: take no new runs, give back every one held."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class AttemptEnded:
    """An attempt's task is over (reported, or handed over to a newer attempt)."""

    run_id: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class LeaseLapsed:
    """No heartbeat was confirmed for a lease (``why`` says how it was seen)."""

    why: str


@dataclass(frozen=True, kw_only=True)
class EngineProbed:
    """The container engine answered as ``engine`` (None: it did not answer)."""

    engine: str | None


@dataclass(frozen=True, kw_only=True)
class CommandRefused:
    """A command from the scheduler could not be read (``error`` says why)."""

    error: str
    size: int


@dataclass(frozen=True, kw_only=True)
class LeaderSeen:
    """A scheduler leads at ``epoch`` (its HeartbeatNow): older epochs' commands are refused.
    ``short_heartbeats``: it reads heartbeats that leave their listing out."""

    epoch: int
    short_heartbeats: bool = False


@dataclass(frozen=True, kw_only=True)
class Tick:
    """Time passed (before each heartbeat): forget what finished long ago."""


Event = (
    Assigned
    | CancelAsked
    | PreemptNoticed
    | AttemptEnded
    | LeaseLapsed
    | EngineProbed
    | CommandRefused
    | LeaderSeen
    | Tick
)

# --- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StartAttempt:
    """Start ``assign``'s attempt; it first stops attempt ``replaces`` of the same run (stale)
    when that is still held."""

    assign: m.Assign
    replaces: int | None = None


@dataclass(frozen=True, kw_only=True)
class StopAttempt:
    run_id: str
    attempt: int
    reason: StopReason


@dataclass(frozen=True, kw_only=True)
class RemoveOrphans:
    """Remove this agent's containers but those of the attempts in ``keep``."""

    keep: frozenset[tuple[str, int]]


@dataclass(frozen=True, kw_only=True)
class Note:
    """A line for the agent's log."""

    level: Literal["info", "warning"]
    message: str
    fields: dict[str, object] = field(default_factory=dict)


Command = StartAttempt | StopAttempt | RemoveOrphans | Note
