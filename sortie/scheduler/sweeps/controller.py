"""``sweep_step``: from a sweep, its trials and their primary-metric reports, at a time, which
trials to submit, which to stop, and whether the sweep is done. Pure: no I/O, no clock, no
randomness beyond the sweep's seed.

The scheduler's core calls it for each sweep whose trials or metrics changed since its last
step (and on ticks, for ``max_duration_s``); it submits ``start`` as trial runs
(``proto.sweeps.trial_run_id``), stops ``stop`` like a cancel (the trial ends ``Canceled`` with
the given error kind and reason) and ends the sweep run when ``done`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.proto.sweeps import ParamValue, SweepSpec


@dataclass(frozen=True)
class SweepView:
    """The sweep as the controller sees it."""

    run_id: str
    spec: SweepSpec
    started_at: float  # when the sweep run was created (max_duration_s counts from here)
    issued: int  # trials submitted so far (indexes 0 .. issued - 1)
    cancel_requested: bool = False  # a user canceled the sweep: stop every trial, start none


@dataclass(frozen=True)
class TrialView:
    """One trial submitted so far."""

    run_id: str
    index: int
    params: dict[str, ParamValue]
    state: RunState


@dataclass(frozen=True)
class NewTrial:
    index: int
    params: dict[str, ParamValue]


@dataclass(frozen=True)
class StopTrial:
    run_id: str
    kind: ErrorKind  # EARLY_TERMINATED (a policy), or CANCELED (the sweep's end or cancel)
    reason: str  # said to the user (``sortie sweep show``): which rule, which values


@dataclass(frozen=True)
class SweepStep:
    start: list[NewTrial] = field(default_factory=list)
    stop: list[StopTrial] = field(default_factory=list)
    # why the sweep ends now (``Sweep.ended_because``); None: it goes on
    done: str | None = None


class SweepMemo:
    """What the caller keeps for one sweep between steps so a step does not redo the past (a
    Bayesian sampler's study, the policy's evaluated intervals). Derived data only: a new memo
    (after a restart) rebuilt from the same trials and metrics gives the same decisions."""


def sweep_step(
    sweep: SweepView,
    trials: Sequence[TrialView],
    metrics: Mapping[str, Sequence[float]],
    now: float,
    memo: SweepMemo,
) -> SweepStep:
    """``metrics``: each trial's reports of the primary metric, in the order logged (run id
    -> values; interval n is ``values[n - 1]``). Trials in ``stop`` are running ones only;
    ``start`` never exceeds ``max_concurrent_trials`` running (not ended) trials or
    ``max_total_trials`` issued ones, and never repeats an index."""
    raise NotImplementedError


def objective(spec: SweepSpec, values: Sequence[float]) -> float | None:
    """A trial's objective: its best reported value by the goal (None: none reported)."""
    raise NotImplementedError


def best_trial(
    spec: SweepSpec, trials: Sequence[TrialView], metrics: Mapping[str, Sequence[float]]
) -> tuple[str, float] | None:
    """The trial with the best objective so far (ties: the lower index) and that objective."""
    raise NotImplementedError
