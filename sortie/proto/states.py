"""The run lifecycle: states and the only transitions allowed between them.

Every component that changes a run's state goes through :func:`transition`; nothing compares
states by hand to decide whether a move is legal.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    PREEMPTED = "Preempted"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"


Q, P, S, R, F, PRE = (
    RunState.QUEUED,
    RunState.PREPARING,
    RunState.STARTING,
    RunState.RUNNING,
    RunState.FINALIZING,
    RunState.PREEMPTED,
)
DONE, FAIL, CANC = RunState.COMPLETED, RunState.FAILED, RunState.CANCELED

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    # placed on an agent; canceled before placement; refused because it can never run
    Q: frozenset({P, CANC, FAIL}),
    # snapshot and environment ready; agent lost -> requeued; build failed; canceled;
    # its low-priority node was preempted
    P: frozenset({S, Q, FAIL, CANC, PRE}),
    # process started; agent lost -> requeued; could not start; canceled; preempted
    S: frozenset({R, Q, FAIL, CANC, PRE}),
    # process exited -> uploading outputs; agent lost -> requeued; killed (timeout); canceled;
    # preempted
    R: frozenset({F, Q, FAIL, CANC, PRE}),
    # the attempt ended because its node was preempted: always requeued as a new attempt,
    # without using max_retries (the scheduler writes both steps in one cycle)
    PRE: frozenset({Q}),
    # outputs uploaded; or back to Queued to retry an attempt whose script FAILED and whose
    # run has retries left (max_retries). A loss here is a failure, never a requeue: the
    # script has already run to its end, and the core only requeues from here on a reported
    # failure, so one submission never completes twice.
    F: frozenset({DONE, FAIL, CANC, Q}),
    # terminal states absorb
    DONE: frozenset(),
    FAIL: frozenset(),
    CANC: frozenset(),
}

TERMINAL: frozenset[RunState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# States in which a run is held by an agent (it has an agent id and an attempt in flight).
ON_AGENT: frozenset[RunState] = frozenset({P, S, R, F})


class IllegalTransition(ValueError):
    def __init__(self, current: RunState, target: RunState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal)"
        super().__init__(f"a run in state {current} cannot move to {target}; allowed: {allowed}")
        self.current = current
        self.target = target


def can_transition(current: RunState, target: RunState) -> bool:
    return target in TRANSITIONS[current]


def transition(current: RunState, target: RunState) -> RunState:
    """Return ``target`` if the lifecycle allows ``current -> target``; raise otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target
