"""Early-termination policies: each a pure function of one trial's standing at an interval and
the standings of every trial at that interval, answering why to stop it (or None).

v1's rules, as its reference states them:
- an *interval* is one report of the primary metric: a trial's n-th report is interval n;
- a policy is applied at every multiple of ``evaluation_interval`` that is greater than or
  equal to ``delay_evaluation`` (``due``); ASHA at its rungs instead;
- a trial evaluated at interval n is compared with the other trials' reports up to interval n
  only, even if they have reported more ("runs aren't terminated for having a lower
  performance because they have run for less time than other runs");
- a trial's value at interval n is the best it reported up to n (by the goal).

The controller never stops the trial with the best objective so far, whatever a policy says.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sortie.proto.sweeps import (
    Asha,
    Bandit,
    Goal,
    MedianStopping,
    NoTermination,
    Policy,
    TruncationSelection,
)


@dataclass(frozen=True)
class Standing:
    """A trial at interval n: its reports up to n (or all it has, if fewer)."""

    run_id: str
    index: int
    best: float  # its best report up to n, by the goal
    average: float  # the mean of its reports up to n (its running average)
    reached: bool  # it reported at least n times
    ended: bool  # its run has ended (any terminal state)


def score(goal: Goal, value: float) -> float:
    """Higher is better, whatever the goal."""
    return value if goal == "maximize" else -value


def due(policy: Policy, n: int) -> bool:
    """Whether ``policy`` is applied at interval ``n`` (n >= 1)."""
    match policy:
        case NoTermination():
            return False
        case Asha(grace_period=grace, reduction_factor=factor, max_interval=top):
            return (top is None or n < top) and _is_rung(n, grace, factor)
        case Bandit() | MedianStopping() | TruncationSelection():
            every, delay = policy.evaluation_interval, policy.delay_evaluation
            return n >= 1 and n % every == 0 and n >= delay


def _is_rung(n: int, grace: int, factor: int) -> bool:
    rung = grace
    while rung < n:
        rung *= factor
    return rung == n


def decide(
    policy: Policy, goal: Goal, n: int, me: Standing, field: Sequence[Standing]
) -> str | None:
    """Why ``me`` stops at interval ``n`` under ``policy`` (``field``: every trial that has
    reported, ``me`` among them), or None. Call only where ``due(policy, n)``."""
    match policy:
        case NoTermination():
            return None
        case Bandit():
            return bandit(policy, goal, n, me, field)
        case MedianStopping():
            return median_stopping(goal, n, me, field)
        case TruncationSelection():
            return truncation(policy, goal, n, me, field)
        case Asha():
            return asha(policy, goal, n, me, field)


def _g(value: float) -> str:
    return f"{value:.4g}"


def bandit(
    policy: Bandit, goal: Goal, n: int, me: Standing, field: Sequence[Standing]
) -> str | None:
    """Outside the slack of the best trial's value at n. v1: with ``slack_factor`` s and a
    maximize goal the bound is ``best / (1 + s)``, minimize ``best * (1 + s)``; written here
    as a distance from the best (``|best| * s / (1 + s)`` and ``|best| * s``) so a negative
    metric is bounded the same way. ``slack_amount`` a: ``best - a`` or ``best + a``."""
    leader = max(field, key=lambda s: (score(goal, s.best), -s.index))
    ref = leader.best
    if policy.slack_amount is not None:
        distance, slack = policy.slack_amount, _g(policy.slack_amount)
    else:
        factor = policy.slack_factor or 0.0
        distance = abs(ref) * (factor / (1 + factor) if goal == "maximize" else factor)
        slack = f"{factor:.0%}" if round(factor * 100, 6).is_integer() else _g(factor)
    bound = ref - distance if goal == "maximize" else ref + distance
    if score(goal, me.best) >= score(goal, bound):
        return None
    return (
        f"bandit: {_g(me.best)} at interval {n} is outside the {slack} slack of the best"
        f" {_g(ref)} (run {leader.run_id}; bound {_g(bound)})"
    )


def median_stopping(goal: Goal, n: int, me: Standing, field: Sequence[Standing]) -> str | None:
    """Worse than the median of the running averages (intervals 1..n) of the trials that
    reached n (``me`` among them, so a trial alone is never stopped)."""
    cohort = [s.average for s in field if s.reached]
    if not cohort:
        return None
    median = statistics.median(cohort)
    if score(goal, me.best) >= score(goal, median):
        return None
    return (
        f"median stopping: best {_g(me.best)} up to interval {n} is worse than the median"
        f" {_g(median)} of the running averages of {len(cohort)} trials at that interval"
    )


def truncation(
    policy: TruncationSelection, goal: Goal, n: int, me: Standing, field: Sequence[Standing]
) -> str | None:
    """Among the lowest ``truncation_percentage`` % of the trials that reached n (rounded
    down: with 20 % and fewer than 5 trials none is), ranked by their value at n, ties to
    the lower index. ``exclude_finished_jobs``: ended trials are not ranked."""
    cohort = [
        s
        for s in field
        if s.reached and (s.run_id == me.run_id or not (policy.exclude_finished_jobs and s.ended))
    ]
    cut = len(cohort) * policy.truncation_percentage // 100
    if cut == 0:
        return None
    ranked = sorted(cohort, key=lambda s: (-score(goal, s.best), s.index))
    place = next(i for i, s in enumerate(ranked) if s.run_id == me.run_id)
    if place < len(ranked) - cut:
        return None
    return (
        f"truncation selection: {_g(me.best)} at interval {n} ranks {place + 1} of"
        f" {len(ranked)}; the lowest {policy.truncation_percentage}% ({cut}) are stopped"
    )


def asha(policy: Asha, goal: Goal, n: int, me: Standing, field: Sequence[Standing]) -> str | None:
    """At a rung, not in the top ``1 / reduction_factor`` of the other trials that reached
    it: worse than their ``1 - 1 / reduction_factor`` quantile (linear, as numpy's
    percentile). The first trial at a rung always goes on."""
    others = [score(goal, s.best) for s in field if s.reached and s.run_id != me.run_id]
    if not others:
        return None
    cutoff = percentile(others, 1 - 1 / policy.reduction_factor)
    if score(goal, me.best) >= cutoff:
        return None
    return (
        f"asha: {_g(me.best)} at rung {n} is not in the top 1/{policy.reduction_factor} of"
        f" {len(others) + 1} trials there (cutoff {_g(score(goal, cutoff))})"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation between order
    statistics (numpy's default method)."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)
