"""Checks on a submitted ``SweepSpec``: what is wrong with it, said so a person can fix it."""

from __future__ import annotations

import math
import re

from sortie.proto.sweeps import (
    MAX_TRIALS,
    Asha,
    Bandit,
    BayesianSampling,
    Choice,
    Expression,
    GridSampling,
    LogNormal,
    LogUniform,
    MedianStopping,
    Normal,
    NoTermination,
    Policy,
    QLogNormal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    SweepSpec,
    TruncationSelection,
    Uniform,
)
from sortie.scheduler.sweeps.space import grid_size

# A parameter becomes a script argument (``--NAME``): letters, digits, ``_ - .``; an optional
# leading ``-`` or ``--`` (``proto.sweeps.argument_name``) and then a letter or digit.
_NAME = re.compile(r"-{0,2}[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_LOG_MAX = 709.0  # exp(709) is below the largest float, exp(710) past it
_BAYESIAN_TAKES = (Choice, Uniform, QUniform)  # v1: "only choice, quniform, and uniform"


def problem(spec: SweepSpec) -> str | None:
    """What is wrong with the sweep (an empty space, a bad bound, a sampler that cannot take
    an expression, a policy Bayesian sampling cannot use, limits below 1, ...), or None."""
    return (
        _space_problem(spec)
        or _sampling_problem(spec)
        or _policy_problem(spec.policy)
        or _limits_problem(spec)
    )


def _space_problem(spec: SweepSpec) -> str | None:
    if not spec.space:
        return "the search space is empty: give at least one parameter and its expression"
    for name, expr in spec.space.items():
        if not _NAME.fullmatch(name):
            return (
                f"parameter name {name!r} is not valid: it becomes the script argument"
                " --NAME, so use letters, digits, '_', '-' and '.' only"
            )
        wrong = _expression_problem(expr)
        if wrong is not None:
            return f"parameter {name!r}: {wrong}"
    return None


def _expression_problem(expr: Expression) -> str | None:
    if isinstance(expr, Choice):
        return "choice() has no values: give at least one" if not expr.values else None
    if isinstance(expr, RandInt):
        return f"randint upper is {expr.upper}: give 1 or more" if expr.upper < 1 else None
    if not all(math.isfinite(v) for v in _numbers(expr)):
        return f"{_kind(expr)} has a bound that is not a finite number: give finite numbers"
    step = getattr(expr, "q", None)
    if step is not None and step <= 0:
        return f"q is {step:g}: give a rounding step above 0"
    match expr:
        case Uniform(min_value=lo, max_value=hi) | QUniform(min_value=lo, max_value=hi):
            return _range_problem(lo, hi)
        case LogUniform(min_value=lo, max_value=hi) | QLogUniform(min_value=lo, max_value=hi):
            return _range_problem(lo, hi) or _log_problem(hi)
        case (
            Normal(sigma=sigma)
            | QNormal(sigma=sigma)
            | LogNormal(sigma=sigma)
            | QLogNormal(sigma=sigma)
        ):
            if sigma <= 0:
                return f"sigma is {sigma:g}: give a standard deviation above 0"
            return None


def _range_problem(lo: float, hi: float) -> str | None:
    if lo >= hi:
        return f"min_value {lo:g} is not below max_value {hi:g}: give min_value < max_value"
    return None


def _log_problem(hi: float) -> str | None:
    # v1's loguniform bounds are exponents: exp(710) is past the largest float
    if hi > _LOG_MAX:
        return f"max_value {hi:g} is an exponent (exp(max_value)): give {_LOG_MAX:.0f} or less"
    return None


def _numbers(expr: Expression) -> list[float]:
    return [
        getattr(expr, f) for f in ("min_value", "max_value", "mu", "sigma", "q") if hasattr(expr, f)
    ]


def _sampling_problem(spec: SweepSpec) -> str | None:
    sampling = spec.sampling
    if isinstance(sampling, GridSampling):
        for name, expr in spec.space.items():
            if not isinstance(expr, Choice):
                return (
                    f"grid sampling takes choice() only; parameter {name!r} is"
                    f" {_kind(expr)}: give it a list of values or use random sampling"
                )
    if isinstance(sampling, BayesianSampling):
        for name, expr in spec.space.items():
            if not isinstance(expr, _BAYESIAN_TAKES):
                return (
                    f"Bayesian sampling takes choice(), uniform() and quniform() only (as"
                    f" v1); parameter {name!r} is {_kind(expr)}: use one of those or random"
                    " sampling"
                )
        if not isinstance(spec.policy, NoTermination):
            return (
                f"Bayesian sampling takes no early-termination policy (as v1: it learns from"
                f" whole trials), and the policy is {spec.policy.__class__.__name__}: leave"
                " the policy out (none) or use random sampling"
            )
    return None


def _kind(expr: Expression) -> str:
    return f"{expr.__class__.__name__.lower()}()"


def _policy_problem(policy: Policy) -> str | None:  # noqa: PLR0911 (one reason per rule)
    if isinstance(policy, NoTermination):
        return None
    if isinstance(policy, Asha):
        if policy.grace_period < 1:
            return f"asha grace_period is {policy.grace_period}: give 1 or more"
        if policy.reduction_factor < 2:
            return f"asha reduction_factor is {policy.reduction_factor}: give 2 or more"
        if policy.max_interval is not None and policy.max_interval < 1:
            return f"asha max_interval is {policy.max_interval}: give 1 or more, or none"
        return None
    name = policy.__class__.__name__
    if policy.evaluation_interval < 1:
        return f"{name} evaluation_interval is {policy.evaluation_interval}: give 1 or more"
    if policy.delay_evaluation < 0:
        return f"{name} delay_evaluation is {policy.delay_evaluation}: give 0 or more"
    if isinstance(policy, Bandit):
        return _bandit_problem(policy)
    if isinstance(policy, TruncationSelection) and not 1 <= policy.truncation_percentage <= 99:
        return (
            f"truncation_percentage is {policy.truncation_percentage}: give a whole percentage"
            " from 1 to 99"
        )
    assert isinstance(policy, MedianStopping | TruncationSelection)
    return None


def _bandit_problem(policy: Bandit) -> str | None:
    factor, amount = policy.slack_factor, policy.slack_amount
    if (factor is None) == (amount is None):
        return "a bandit policy takes exactly one of slack_factor and slack_amount"
    slack = factor if factor is not None else amount
    assert slack is not None
    if not math.isfinite(slack) or slack < 0:
        which = "slack_factor" if factor is not None else "slack_amount"
        return f"{which} is {slack:g}: give a finite number of 0 or more"
    return None


def _limits_problem(spec: SweepSpec) -> str | None:
    if not spec.primary_metric.strip():
        return "primary_metric is empty: name the metric the script logs (Run.log(name, value))"
    if not 1 <= spec.max_total_trials <= MAX_TRIALS:
        return f"max_total_trials is {spec.max_total_trials}: give 1 to {MAX_TRIALS:,}"
    top = spec.max_concurrent_trials
    if top is not None and not 1 <= top <= MAX_TRIALS:
        return f"max_concurrent_trials is {top}: give 1 to {MAX_TRIALS:,}, or none"
    limit = spec.max_duration_s
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        return f"max_duration_s is {limit:g}: give a number of seconds above 0, or none"
    if isinstance(spec.sampling, GridSampling) and grid_size(spec.space) > MAX_TRIALS:
        return f"the grid has more than {MAX_TRIALS:,} points: give fewer choices"
    return None
