"""The run index (pure): a small summary of every stored run, in memory, newest first.

Listing runs must not read every record: with 100,000 runs a full read of the runs bucket takes
seconds. The scheduler, the one writer of run records, keeps this index current: it fills it
while loading (ended runs included, though they leave ``SchedulerState``) and updates it with
every record it stores. A client asks it for one page of run ids (``proto/run_index.RunQuery``)
and then gets those records by key.

The keys ``(created_at, run_id)`` are kept in one ascending list. The unfiltered page is a
slice of it (O(limit) after a bisect); a filtered one scans the summaries once, counting the
total, and slices the matches the same way. ``tests/scheduler/test_run_index.py`` checks both
against a plain filter and sort.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState

Key = tuple[float, str]  # (created_at, run_id): the order of runs, oldest first


@dataclass(frozen=True, slots=True)
class Summary:
    """What the index keeps of a run: the fields its queries filter on and show."""

    run_id: str
    experiment: str
    target: str
    state: RunState
    created_at: float
    tags: Mapping[str, str]
    parent_id: str | None
    metrics: Mapping[str, float]

    @property
    def key(self) -> Key:
        return (self.created_at, self.run_id)


def summary_of(rec: m.RunRecord) -> Summary:
    return Summary(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        state=rec.state,
        created_at=rec.created_at,
        tags=rec.tags,
        parent_id=rec.parent_id,
        metrics=rec.metrics,
    )


def admitted(query: q.RunQuery, s: Summary) -> bool:
    return q.admits(
        query,
        run_id=s.run_id,
        experiment=s.experiment,
        target=s.target,
        state=s.state,
        created_at=s.created_at,
        tags=s.tags,
        parent_id=s.parent_id,
    )


def _cursor(key: Key) -> q.RunCursor:
    return q.RunCursor(created_at=key[0], run_id=key[1])


def window(keys: list[Key], query: q.RunQuery) -> q.RunPage:
    """The page of ``keys`` (ascending, every one a match) that ``query``'s cursor asks for."""
    n = len(keys)
    if query.after is not None:
        lo = bisect_right(keys, (query.after.created_at, query.after.run_id))
        hi = min(n, lo + query.limit)
    else:
        hi = (
            n
            if query.before is None
            else bisect_left(keys, (query.before.created_at, query.before.run_id))
        )
        lo = max(0, hi - query.limit)
    shown = keys[lo:hi]
    return q.RunPage(
        run_ids=[k[1] for k in reversed(shown)],
        total=n,
        older=_cursor(shown[0]) if shown and lo > 0 else None,
        newer=_cursor(shown[-1]) if shown and hi < n else None,
    )


@dataclass
class _Experiment:
    runs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    latest: Key = (-math.inf, "")
    best: tuple[float, Key] | None = None  # (score: higher is better, run key)
    best_value: float | None = None

    def add(self, s: Summary, metric: str | None, sign: float) -> None:
        self.runs += 1
        self.states[str(s.state)] += 1
        self.latest = max(self.latest, s.key)
        value = s.metrics.get(metric) if metric is not None else None
        if value is None or not math.isfinite(value):
            return
        score = (value * sign, s.key)  # ties: the newer run
        if self.best is None or score > self.best:
            self.best, self.best_value = score, value


class RunIndex:
    def __init__(self) -> None:
        self._runs: dict[str, Summary] = {}
        self._keys: list[Key] = []  # ascending once sorted
        self._unsorted = False

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> Summary | None:
        return self._runs.get(run_id)

    def update(self, rec: m.RunRecord) -> None:
        """The run as stored now (new or changed)."""
        new = summary_of(rec)
        old = self._runs.get(rec.run_id)
        self._runs[rec.run_id] = new
        if old is not None and old.key == new.key:
            return
        if old is not None:
            self._sort()
            del self._keys[bisect_left(self._keys, old.key)]
        if self._keys and new.key < self._keys[-1]:
            self._unsorted = True  # sorted once, when next read (loading adds in key order)
        self._keys.append(new.key)

    def update_all(self, recs: Iterable[m.RunRecord]) -> None:
        for rec in recs:
            self.update(rec)

    def _sort(self) -> None:
        if self._unsorted:
            self._keys.sort()
            self._unsorted = False

    def query(self, query: q.RunQuery) -> q.RunPageOrError:
        why = q.problem(query)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why)
        self._sort()
        if not q.filtered(query):
            return window(self._keys, query)
        runs = self._runs
        return window([k for k in self._keys if admitted(query, runs[k[1]])], query)

    def experiments(self, query: q.ExperimentsQuery) -> q.ExperimentList:
        sign = 1.0 if query.goal == "max" else -1.0
        found: dict[str, _Experiment] = {}
        for s in self._runs.values():
            found.setdefault(s.experiment, _Experiment()).add(s, query.metric, sign)
        ordered = sorted(found.items(), key=lambda kv: (kv[1].latest, kv[0]), reverse=True)
        return q.ExperimentList(
            experiments=[
                q.ExperimentSummary(
                    name=name,
                    runs=e.runs,
                    states=dict(sorted(e.states.items())),
                    latest_run_id=e.latest[1],
                    latest_created_at=e.latest[0],
                    best_value=e.best_value,
                    best_run_id=e.best[1][1] if e.best is not None else None,
                )
                for name, e in ordered
            ]
        )


def answer(index: RunIndex, request: q.RunQuery | q.ExperimentsQuery) -> m.Message:
    """The reply to a query of the index."""
    if isinstance(request, q.RunQuery):
        return index.query(request)
    return index.experiments(request)
