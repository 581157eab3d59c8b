"""Where each trial stands at an interval: its best report and running average up to it,
kept as prefix arrays that grow with the reports so a step costs O(new reports), not
O(all reports). A report that is not a finite number (NaN, inf) counts as an interval but
never as a value: a trial with no finite report up to n has no standing at n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sortie.proto.sweeps import Goal
from sortie.scheduler.sweeps.policies import Standing, score


@dataclass
class Prefixes:
    """A trial's reports so far, as prefixes: ``best[i]``, ``total[i]``, ``count[i]`` are
    over reports 1..i+1 (best None while no finite report)."""

    best: list[float | None] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)

    def extend(self, goal: Goal, values: Sequence[float]) -> None:
        """Take ``values`` (all the trial's reports, the old ones first)."""
        if len(values) < len(self.best):  # not the same trial's reports: start over
            self.best, self.total, self.count = [], [], []
        best = self.best[-1] if self.best else None
        total = self.total[-1] if self.total else 0.0
        count = self.count[-1] if self.count else 0
        for value in values[len(self.best) :]:
            if math.isfinite(value):
                if best is None or score(goal, value) > score(goal, best):
                    best = value
                total += value
                count += 1
            self.best.append(best)
            self.total.append(total)
            self.count.append(count)


def best_of(goal: Goal, values: Sequence[float]) -> float | None:
    """The best finite value by the goal, or None."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if goal == "maximize" else min(finite)


def standing_at(
    prefixes: Prefixes, run_id: str, index: int, n: int, *, ended: bool
) -> Standing | None:
    """The trial at interval ``n`` (its reports up to n, or all it has if fewer)."""
    upto = min(n, len(prefixes.best))
    if upto == 0:
        return None
    best = prefixes.best[upto - 1]
    if best is None:
        return None
    average = prefixes.total[upto - 1] / prefixes.count[upto - 1]
    return Standing(
        run_id=run_id,
        index=index,
        best=best,
        average=average,
        reached=len(prefixes.best) >= n,
        ended=ended,
    )
