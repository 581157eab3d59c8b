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
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.sweeps import (
    BayesianSampling,
    GridSampling,
    NoTermination,
    ParamValue,
    RandomSampling,
    SweepSpec,
)
from sortie.scheduler.sweeps import bayes, space
from sortie.scheduler.sweeps.policies import Standing, decide, due, score
from sortie.scheduler.sweeps.standings import Prefixes, best_of, standing_at


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

    def __init__(self) -> None:
        self.study: bayes.Study | None = None  # Bayesian sampling's, told the ended trials
        self.evaluated: dict[str, int] = {}  # run id -> the last interval looked at
        self.stopping: set[str] = set()  # run ids already in a step's ``stop``: not sent twice
        self.prefixes: dict[str, Prefixes] = {}  # run id -> its reports as prefixes


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
    ``max_total_trials`` issued ones, and never repeats an index.

    In order: a cancel stops every running trial (kind ``canceled``) and ends the sweep; a
    sweep with nothing left to issue ends once all its trials ended; past ``max_duration_s``
    every running trial is stopped (``canceled``) and the sweep ends; else the policy stops
    trials (``early_terminated``, never the best so far) and new trials fill the free places.
    """
    spec = sweep.spec
    live = sorted((t for t in trials if t.state not in TERMINAL), key=lambda t: t.index)
    if sweep.cancel_requested:
        return SweepStep(stop=_stop_all(live, memo, "the sweep was canceled"), done="canceled")
    ended = sweep.issued - _unended(sweep, trials)
    finished = _exhausted(spec, sweep.issued)
    if finished is not None and ended == sweep.issued:
        return SweepStep(done=finished)
    limit = spec.max_duration_s
    if limit is not None and now - sweep.started_at >= limit:
        why = f"the sweep's max_duration_s ({limit:g} s) was reached"
        return SweepStep(stop=_stop_all(live, memo, why), done="max_duration reached")
    stop = _policy_stops(spec, trials, live, metrics, memo)
    start = _admit(sweep, trials, metrics, memo, running=sweep.issued - ended)
    return SweepStep(start=start, stop=stop)


def _unended(sweep: SweepView, trials: Sequence[TrialView]) -> int:
    """Issued trials not ended (one the caller has not recorded yet counts as running)."""
    ended = {t.index for t in trials if t.state in TERMINAL and 0 <= t.index < sweep.issued}
    return sweep.issued - len(ended)


def _exhausted(spec: SweepSpec, issued: int) -> str | None:
    """Why no trial is left to issue, or None."""
    if isinstance(spec.sampling, GridSampling):
        size = space.grid_size(spec.space)
        if size <= spec.max_total_trials and issued >= size:
            return "grid exhausted"
    if issued >= spec.max_total_trials:
        return "max_total_trials reached"
    return None


def _stop_all(live: Sequence[TrialView], memo: SweepMemo, reason: str) -> list[StopTrial]:
    out = [
        StopTrial(run_id=t.run_id, kind=ErrorKind.CANCELED, reason=reason)
        for t in live
        if t.run_id not in memo.stopping
    ]
    memo.stopping.update(s.run_id for s in out)
    return out


def _admit(
    sweep: SweepView,
    trials: Sequence[TrialView],
    metrics: Mapping[str, Sequence[float]],
    memo: SweepMemo,
    *,
    running: int,
) -> list[NewTrial]:
    """New trials for the free places, indexes from ``issued`` on."""
    spec = sweep.spec
    room = spec.max_total_trials - sweep.issued
    if isinstance(spec.sampling, GridSampling):
        room = min(room, space.grid_size(spec.space) - sweep.issued)
    if spec.max_concurrent_trials is not None:
        room = min(room, spec.max_concurrent_trials - running)
    indexes = range(sweep.issued, sweep.issued + max(room, 0))
    match spec.sampling:
        case GridSampling():
            return [NewTrial(index=i, params=space.grid_point(spec.space, i)) for i in indexes]
        case RandomSampling(seed=seed):
            return [
                NewTrial(index=i, params=space.random_params(spec.space, seed, i)) for i in indexes
            ]
        case BayesianSampling(seed=seed):
            if not indexes:
                return []
            ended = _ended_results(spec, trials, metrics)
            memo.study = bayes.study_for(memo.study, spec.space, spec.goal, ended)
            return [
                NewTrial(index=i, params=bayes.suggest(memo.study, spec.space, seed, i))
                for i in indexes
            ]


def _ended_results(
    spec: SweepSpec, trials: Sequence[TrialView], metrics: Mapping[str, Sequence[float]]
) -> list[bayes.Ended]:
    """Every ended trial with an objective, in index order."""
    out = []
    for t in sorted(trials, key=lambda t: t.index):
        value = objective(spec, metrics.get(t.run_id, ()))
        if t.state in TERMINAL and value is not None:
            out.append(bayes.Ended(index=t.index, params=t.params, objective=value))
    return out


def _policy_stops(
    spec: SweepSpec,
    trials: Sequence[TrialView],
    live: Sequence[TrialView],
    metrics: Mapping[str, Sequence[float]],
    memo: SweepMemo,
) -> list[StopTrial]:
    """Each running trial at each interval it reported since the last step where the policy
    is due, in order, until one says stop. The best trial so far is never stopped."""
    if isinstance(spec.policy, NoTermination):
        return []
    for t in trials:
        memo.prefixes.setdefault(t.run_id, Prefixes()).extend(spec.goal, metrics.get(t.run_id, ()))
    leader = best_trial(spec, trials, metrics)
    fields: dict[int, dict[str, Standing]] = {}  # interval -> standings (this step's data)
    out: list[StopTrial] = []
    for t in live:
        if t.run_id in memo.stopping:
            continue
        reason = _first_stop(spec, trials, t, fields, memo)
        if reason is not None and (leader is None or leader[0] != t.run_id):
            out.append(StopTrial(run_id=t.run_id, kind=ErrorKind.EARLY_TERMINATED, reason=reason))
            memo.stopping.add(t.run_id)
    return out


def _first_stop(
    spec: SweepSpec,
    trials: Sequence[TrialView],
    trial: TrialView,
    fields: dict[int, dict[str, Standing]],
    memo: SweepMemo,
) -> str | None:
    reported = len(memo.prefixes[trial.run_id].best)
    for n in range(memo.evaluated.get(trial.run_id, 0) + 1, reported + 1):
        memo.evaluated[trial.run_id] = n
        if not due(spec.policy, n):
            continue
        if n not in fields:
            fields[n] = _field(trials, n, memo)
        me = fields[n].get(trial.run_id)
        if me is None:
            continue
        reason = decide(spec.policy, spec.goal, n, me, list(fields[n].values()))
        if reason is not None:
            return reason
    return None


def _field(trials: Sequence[TrialView], n: int, memo: SweepMemo) -> dict[str, Standing]:
    """Every trial that has reported, at interval ``n``."""
    out: dict[str, Standing] = {}
    for t in trials:
        at = standing_at(memo.prefixes[t.run_id], t.run_id, t.index, n, ended=t.state in TERMINAL)
        if at is not None:
            out[t.run_id] = at
    return out


def objective(spec: SweepSpec, values: Sequence[float]) -> float | None:
    """A trial's objective: its best reported value by the goal (None: none reported).
    Reports that are not finite numbers (NaN, inf) are not values."""
    return best_of(spec.goal, values)


def best_trial(
    spec: SweepSpec, trials: Sequence[TrialView], metrics: Mapping[str, Sequence[float]]
) -> tuple[str, float] | None:
    """The trial with the best objective so far (ties: the lower index) and that objective."""
    best: tuple[float, int, str, float] | None = None
    for t in trials:
        value = objective(spec, metrics.get(t.run_id, ()))
        if value is None:
            continue
        key = (score(spec.goal, value), -t.index, t.run_id, value)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else (best[2], best[3])
