"""What the sweep views show, as plain data: a sweep's row in the list, its spec in words, its
trials' rows, the parameter-vs-objective scatter and the trials' primary-metric curves. Pure:
run records and metric points in, JSON-ready dicts out.

A sweep is a run with ``RunRecord.sweep`` set; its trials are its children with
``RunRecord.trial`` set (``proto/sweeps.py``). The scheduler keeps the progress on the records
(``Sweep.issued``, ``best_run_id``, ``best_objective``; ``Trial.objective``, ``intervals``):
this module shows it, it decides nothing. A trial that a policy stopped ended ``Canceled`` with
error kind ``early_terminated``; its error message says which rule stopped it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec

from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL

MAX_CURVES = 50  # trials whose metric curves the page overlays at most (the best ones)


def finite(value: float | None) -> float | None:
    """``value``, or None where JSON cannot hold it (NaN, infinite)."""
    return value if value is not None and math.isfinite(value) else None


def value_text(value: sw.ParamValue) -> str:
    """A parameter value as the views write it (strings quoted, floats to 6 digits)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def call_text(struct: msgspec.Struct) -> str:
    """A tagged variant as a call: ``uniform(min_value=0, max_value=1)``, ``grid()``,
    ``bandit(evaluation_interval=1, delay_evaluation=5, slack_factor=0.1)``; unset fields
    (None) left out. One rule for every expression, sampler and policy: a new variant needs
    nothing here."""
    tag = struct.__struct_config__.tag
    parts = []
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if value is None:
            continue
        if isinstance(value, list):
            parts.append(f"{name}=[{', '.join(value_text(v) for v in value)}]")
        else:
            parts.append(f"{name}={value_text(value)}")
    return f"{tag}({', '.join(parts)})"


def spec_facts(spec: sw.SweepSpec) -> dict[str, Any]:
    """The sweep's spec in words: the space (one line per parameter), sampler, policy, limits."""
    return {
        "space": [
            {"name": name, "argument": sw.argument_name(name), "expression": call_text(expr)}
            for name, expr in spec.space.items()
        ],
        "sampling": call_text(spec.sampling),
        "policy": call_text(spec.policy),
        "primary_metric": spec.primary_metric,
        "goal": spec.goal,
        "max_total_trials": spec.max_total_trials,
        "max_concurrent_trials": spec.max_concurrent_trials,
        "max_duration_s": spec.max_duration_s,
    }


def summary(rec: m.RunRecord) -> dict[str, Any]:
    """A sweep run as the sweeps list shows it (and the sweep page's header, kept live)."""
    assert rec.sweep is not None, f"run {rec.run_id} is not a sweep"
    sweep, spec = rec.sweep, rec.sweep.spec
    return {
        "run_id": rec.run_id,
        "experiment": rec.spec.experiment,
        "state": str(rec.state),
        "terminal": rec.state in TERMINAL,
        "cancel_requested": rec.cancel_requested,
        "issued": sweep.issued,
        "max_total_trials": spec.max_total_trials,
        "best_run_id": sweep.best_run_id,
        "best_objective": finite(sweep.best_objective),
        "primary_metric": spec.primary_metric,
        "goal": spec.goal,
        "sampling": str(spec.sampling.__struct_config__.tag),
        "policy": str(spec.policy.__struct_config__.tag),
        "ended_because": sweep.ended_because,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
    }


def trial_row(rec: m.RunRecord) -> dict[str, Any]:
    """A trial as the sweep page's table shows it: its place, state, parameters, objective,
    reported intervals, and why it stopped (its error) when it did not complete."""
    assert rec.trial is not None, f"run {rec.run_id} is not a trial"
    trial = rec.trial
    error = rec.error
    return {
        "run_id": rec.run_id,
        "index": trial.index,
        "state": str(rec.state),
        "terminal": rec.state in TERMINAL,
        "params": dict(trial.params),
        "objective": finite(trial.objective),
        "intervals": trial.intervals,
        "early_terminated": error is not None and error.kind is ErrorKind.EARLY_TERMINATED,
        "error": None if error is None else {"kind": str(error.kind), "message": error.message},
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
    }


def trial_rows(children: Sequence[m.RunRecord]) -> list[dict[str, Any]]:
    """The sweep's trials (children that are trials), by index."""
    rows = [trial_row(r) for r in children if r.trial is not None]
    return sorted(rows, key=lambda r: (r["index"], r["run_id"]))


def _better(goal: sw.Goal, value: float) -> float:
    """A sort key: smaller is better."""
    return -value if goal == "maximize" else value


def ranked(rows: Sequence[dict[str, Any]], goal: sw.Goal) -> list[dict[str, Any]]:
    """Trial rows best first by objective (ties: the lower index); those without one last."""
    return sorted(
        rows,
        key=lambda r: (
            r["objective"] is None,
            0.0 if r["objective"] is None else _better(goal, r["objective"]),
            r["index"],
        ),
    )


def curve_runs(rows: Sequence[dict[str, Any]], goal: sw.Goal, most: int = MAX_CURVES) -> list[str]:
    """Whose curves the page overlays: the ``most`` best trials (all of a smaller sweep)."""
    return [r["run_id"] for r in ranked(rows, goal)[:most]]


def _categories(values: Sequence[sw.ParamValue]) -> list[str] | None:
    """The axis labels of a parameter whose values are not all numbers (None: numeric)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return list(dict.fromkeys(value_text(v) for v in values))


def scatter(spec: sw.SweepSpec, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per parameter (in the space's order), the trials with an objective as points
    (x: the parameter's value, or its category's place; y: the objective). A ``Choice``
    names its categories in its own order, so the axis keeps its place as trials come."""
    scored = [r for r in rows if r["objective"] is not None]
    out = []
    for name, expr in spec.space.items():
        shown = [r for r in scored if name in r["params"]]
        values: list[sw.ParamValue] = [r["params"][name] for r in shown]
        known = list(expr.values) if isinstance(expr, sw.Choice) else []
        labels = _categories([*known, *values])
        place = {label: i for i, label in enumerate(labels or [])}
        xs = [float(v) if labels is None else place[value_text(v)] for v in values]
        out.append(
            {
                "name": name,
                "categories": labels,
                "x": xs,
                "y": [r["objective"] for r in shown],
                "runs": [r["run_id"] for r in shown],
            }
        )
    return out


def curve(points: Sequence[m.MetricPoint], metric: str) -> list[float | None]:
    """A trial's reports of ``metric`` in the order logged: interval n is ``[n - 1]`` (a
    value JSON cannot hold, or one that is not a number, as None: a gap)."""
    out: list[float | None] = []
    for p in points:
        if p.name != metric or p.column is not None:
            continue
        value = p.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(None)
        else:
            out.append(finite(float(value)))
    return out


def best(summary_row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial so far (the scheduler's ``Sweep.best_run_id``) with its row."""
    best_id = summary_row["best_run_id"]
    if best_id is None:
        return None
    found = next((r for r in rows if r["run_id"] == best_id), None)
    return {"run_id": best_id, "objective": summary_row["best_objective"], "trial": found}
