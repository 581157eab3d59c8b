"""What a person or a program sees of a sweep: its trials with their objectives, the best so
far and why each stopped trial stopped. The JSON of `sortie sweep show|trials|list --output
json`, and what the SDK's ``SweepRun`` reads.

A trial's objective is its best value of the primary metric (by the goal), read from the
metric points the trial logged, as v1 reads ``get_metrics`` of each child: the record's own
``Trial.objective`` is used when the trial logged nothing readable.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from sortie.client.client import Client, ClientError
from sortie.client.views import ErrorView, View, iso
from sortie.proto import messages as m
from sortie.proto import run_index
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.sweeps import Goal, ParamValue, SweepSpec


class NotASweep(ClientError):
    """A run that is not a sweep was named where a sweep is needed."""


class TrialView(View, frozen=True, kw_only=True):
    """One trial: `sortie sweep trials --output json` lists these, best first."""

    index: int
    run_id: str
    state: RunState
    params: dict[str, ParamValue]
    objective: float | None  # its best value of the primary metric (None: none reported)
    intervals: int  # how many times it reported the primary metric
    # why it stopped before its end: the policy's reason (early_terminated), a cancel, ...
    stop_reason: str | None = None
    error: ErrorView | None = None


class BestTrialView(View, frozen=True, kw_only=True):
    run_id: str
    index: int
    params: dict[str, ParamValue]
    objective: float


class StoppedTrialView(View, frozen=True, kw_only=True):
    """A trial the sweep's policy ended early, and why."""

    run_id: str
    index: int
    reason: str


class SweepView(View, frozen=True, kw_only=True):
    """`sortie sweep show --output json`."""

    run_id: str
    experiment: str
    target: str
    state: RunState
    created_at: str | None
    ended_at: str | None
    spec: SweepSpec
    issued: int  # trials submitted so far
    trials_by_state: dict[str, int]
    best: BestTrialView | None
    early_terminated: list[StoppedTrialView]
    ended_because: str | None = None
    error: ErrorView | None = None


class SweepSummaryView(View, frozen=True, kw_only=True):
    """One line of `sortie sweep list --output json`."""

    run_id: str
    experiment: str
    state: RunState
    sampling: str
    primary_metric: str
    goal: Goal
    issued: int
    max_total_trials: int
    best_run_id: str | None
    best_objective: float | None
    created_at: str | None


# --- pure ----------------------------------------------------------------------------------


def sweep_of(rec: m.RunRecord) -> m.Sweep:
    """The record's sweep, or ``NotASweep`` saying what to do instead."""
    if rec.sweep is None:
        raise NotASweep(
            f"run {rec.run_id} is not a sweep: `sortie sweep list` shows the sweeps "
            "(`sortie run ...` handles other runs)"
        )
    return rec.sweep


def values_of(points: Sequence[m.MetricPoint], metric: str) -> list[float]:
    """The run's reports of ``metric``, in order: plain numeric values only."""
    return [
        float(p.value)
        for p in points
        if p.name == metric
        and p.column is None
        and isinstance(p.value, int | float)
        and not isinstance(p.value, bool)
        and math.isfinite(p.value)
    ]


def best_of(values: Sequence[float], goal: Goal) -> float | None:
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)


def _stop_reason(rec: m.RunRecord) -> str | None:
    if rec.state != RunState.CANCELED or rec.error is None:
        return None
    if rec.error.kind == ErrorKind.EARLY_TERMINATED:
        return rec.error.message or "stopped by the sweep's early-termination policy"
    return f"{rec.error.kind}: {rec.error.message}"


def trial_view(rec: m.RunRecord, values: Sequence[float], goal: Goal) -> TrialView:
    """One trial from its record and its reports of the primary metric."""
    assert rec.trial is not None
    objective = best_of(values, goal)
    if objective is None:
        objective = rec.trial.objective
    err = rec.error
    return TrialView(
        index=rec.trial.index,
        run_id=rec.run_id,
        state=rec.state,
        params=dict(rec.trial.params),
        objective=objective,
        intervals=max(len(values), rec.trial.intervals),
        stop_reason=_stop_reason(rec),
        error=None if err is None else ErrorView(kind=str(err.kind), message=err.message),
    )


def ranked(trials: Sequence[TrialView], goal: Goal, *, reverse: bool = False) -> list[TrialView]:
    """Best first by the goal (``reverse``: worst first); trials without an objective after
    them, by index (v1's ``get_children_sorted_by_primary_metric``). Ties: the lower index."""
    scored = [t for t in trials if t.objective is not None]
    sign = -1.0 if goal == "maximize" else 1.0
    scored.sort(key=lambda t: (sign * (t.objective or 0.0), t.index))
    if reverse:
        scored.reverse()
    return scored + sorted((t for t in trials if t.objective is None), key=lambda t: t.index)


def best_trial(trials: Sequence[TrialView], goal: Goal) -> BestTrialView | None:
    top = ranked(trials, goal)
    if not top or top[0].objective is None:
        return None
    t = top[0]
    assert t.objective is not None
    return BestTrialView(run_id=t.run_id, index=t.index, params=t.params, objective=t.objective)


def sweep_view(rec: m.RunRecord, trials: Sequence[TrialView]) -> SweepView:
    sweep = sweep_of(rec)
    counts: dict[str, int] = {}
    for t in trials:
        counts[str(t.state)] = counts.get(str(t.state), 0) + 1
    stopped = [
        StoppedTrialView(run_id=t.run_id, index=t.index, reason=t.stop_reason or "")
        for t in sorted(trials, key=lambda t: t.index)
        if t.error is not None and t.error.kind == ErrorKind.EARLY_TERMINATED
    ]
    err = rec.error
    return SweepView(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        state=rec.state,
        created_at=iso(rec.created_at),
        ended_at=iso(rec.ended_at) if rec.state in TERMINAL else None,
        spec=sweep.spec,
        issued=max(sweep.issued, len(trials)),
        trials_by_state=dict(sorted(counts.items())),
        best=best_trial(trials, sweep.spec.goal),
        early_terminated=stopped,
        ended_because=sweep.ended_because,
        error=None if err is None else ErrorView(kind=str(err.kind), message=err.message),
    )


def sweep_summary_view(rec: m.RunRecord) -> SweepSummaryView:
    sweep = sweep_of(rec)
    spec = sweep.spec
    return SweepSummaryView(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        state=rec.state,
        sampling=str(spec.sampling.__struct_config__.tag),
        primary_metric=spec.primary_metric,
        goal=spec.goal,
        issued=sweep.issued,
        max_total_trials=spec.max_total_trials,
        best_run_id=sweep.best_run_id,
        best_objective=sweep.best_objective,
        created_at=iso(rec.created_at),
    )


# --- reading -------------------------------------------------------------------------------


async def get_sweep(client: Client, run_id: str) -> m.RunRecord:
    """The sweep's record (``NotASweep`` for another run)."""
    rec = await client.get_run(run_id)
    sweep_of(rec)
    return rec


async def trials_of(client: Client, rec: m.RunRecord) -> list[TrialView]:
    """The sweep's trials, by index, each with its reports of the primary metric read."""
    spec = sweep_of(rec).spec
    kids = [k for k in await client.children(rec.run_id) if k.trial is not None]

    async def one(kid: m.RunRecord) -> TrialView:
        points = await client.metric_points(kid.run_id)
        return trial_view(kid, values_of(points, spec.primary_metric), spec.goal)

    views = await asyncio.gather(*(one(k) for k in kids))
    return sorted(views, key=lambda t: t.index)


async def list_sweeps(client: Client, experiment: str | None = None) -> list[m.RunRecord]:
    """Every sweep (of one experiment), newest first."""
    try:
        query = run_index.RunQuery(
            experiment=experiment, sweeps=True, include_children=False, limit=run_index.MAX_LIMIT
        )
        runs = await client.query_all_runs(query)
    except ClientError:  # no scheduler answers: one read of every record
        runs = await client.list_runs(experiment)
    return [r for r in runs if r.sweep is not None]
