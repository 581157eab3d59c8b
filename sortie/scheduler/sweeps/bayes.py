"""Bayesian sampling: Optuna's TPE sampler through ask/tell.

Deterministic from data, so a restarted scheduler asks what the old one would have:
- the study holds exactly the ended trials that have an objective, added in index order
  (``create_trial`` + ``add_trial``; TPE weighs trials by their order, so order matters);
- trial i is asked with a fresh ``TPESampler`` seeded from ``(seed, i)``, so its parameters
  depend on the seed, its index and the ended trials only, never on how many asks came
  before (several trials asked in one step get different points);
- the asked trial is told ``FAIL`` at once (TPE ignores failed trials), so the study never
  holds a trial that a rebuilt one would lack.

Optuna is imported inside the functions: the scheduler's start-up and every other command
never pay for it (``benchmarks/sweeps.py`` measures the import).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sortie.proto.sweeps import (
    Choice,
    Expression,
    Goal,
    LogUniform,
    ParamValue,
    QLogUniform,
    QUniform,
    RandInt,
    Uniform,
)
from sortie.scheduler.sweeps.space import quantize

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Ended:
    """An ended trial as the study is told it."""

    index: int
    params: dict[str, ParamValue]
    objective: float


@dataclass
class Study:
    """The study a sweep's memo keeps between steps, and which trials it was told."""

    study: Any  # an optuna.Study (Any: optuna stays out of the module's import time)
    told: list[int] = field(default_factory=list)  # in order (a skipped one too)


def _distribution(expr: Expression) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import (  # lazy: see the module's docstring
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    match expr:
        case Choice(values=values):
            return CategoricalDistribution(list(values))
        case RandInt(upper=upper):
            return IntDistribution(0, upper - 1)
        case Uniform(min_value=lo, max_value=hi) | QUniform(min_value=lo, max_value=hi):
            return FloatDistribution(lo, hi)
        case LogUniform(min_value=lo, max_value=hi) | QLogUniform(min_value=lo, max_value=hi):
            return FloatDistribution(math.exp(lo), math.exp(hi), log=True)
        case _:
            raise ValueError(
                f"Bayesian sampling cannot take a {expr.__class__.__name__} expression"
                " (validate.problem refuses it)"
            )


def _outward(expr: Expression, value: Any) -> ParamValue:
    """A value Optuna suggested, as the trial gets it (v1's rounding for q-expressions)."""
    if isinstance(expr, QUniform | QLogUniform):
        return quantize(float(value), expr.q)
    return value  # type: ignore[no-any-return]


def _inward(expr: Expression, value: ParamValue) -> Any:
    """A trial's value as the study is told it: a rounded value back inside its range."""
    dist = _distribution(expr)
    if isinstance(expr, QUniform | QLogUniform) and isinstance(value, int | float):
        low, high = dist.low, dist.high  # type: ignore[attr-defined]
        return min(max(float(value), low), high)
    return value


def _seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{index}/tpe".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _new_study(goal: Goal) -> Study:
    import optuna  # lazy: see the module's docstring

    optuna.logging.set_verbosity(logging.WARNING)
    return Study(study=optuna.create_study(direction=goal))


def _tell(kept: Study, space: Mapping[str, Expression], trial: Ended) -> None:
    import optuna  # lazy: see the module's docstring

    if set(trial.params) != set(space):
        return  # not a point of this space: nothing to learn from it
    dists = {name: _distribution(expr) for name, expr in space.items()}
    params = {name: _inward(expr, trial.params[name]) for name, expr in space.items()}
    try:
        made = optuna.trial.create_trial(params=params, distributions=dists, value=trial.objective)
    except ValueError:
        return  # a value outside its distribution: not a point of this space
    kept.study.add_trial(made)


def study_for(
    kept: Study | None, space: Mapping[str, Expression], goal: Goal, ended: Sequence[Ended]
) -> Study:
    """``kept`` told the ``ended`` trials (in index order), or a new study when ``kept``
    cannot be extended to exactly that (a trial ended before one with a lower index)."""
    told = set(kept.told) if kept is not None else set()
    new = [t for t in ended if t.index not in told]
    last = kept.told[-1] if kept is not None and kept.told else -1
    if kept is None or any(t.index < last for t in new):
        kept = _new_study(goal)
        new = list(ended)
    for trial in new:
        _tell(kept, space, trial)
        kept.told.append(trial.index)
    return kept


def suggest(
    kept: Study, space: Mapping[str, Expression], seed: int, index: int
) -> dict[str, ParamValue]:
    """Trial ``index``'s parameters, asked of the study with a sampler seeded by
    ``(seed, index)``."""
    import optuna  # lazy: see the module's docstring

    kept.study.sampler = optuna.samplers.TPESampler(seed=_seed(seed, index))
    dists = {name: _distribution(expr) for name, expr in space.items()}
    asked = kept.study.ask(dists)
    params = {name: _outward(expr, asked.params[name]) for name, expr in space.items()}
    kept.study.tell(asked, state=optuna.trial.TrialState.FAIL)
    return params
