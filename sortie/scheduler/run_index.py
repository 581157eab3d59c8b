"""The run index (pure): a small summary of every stored run, in memory, newest first.

Listing runs must not read every record: with 100,000 runs a full read of the runs bucket takes
seconds. The scheduler, the one writer of run records, keeps this index current: it fills it
while loading (ended runs included, though they leave ``SchedulerState``) and updates it with
every record it stores. A client asks it for one page of run ids (``proto/run_index.RunQuery``)
and then gets those records by key.

The keys ``(created_at, run_id)`` are kept in one ascending list, and per experiment in one
more, with its counts by state. The unfiltered page is a slice of the list (O(limit) after a
bisect); a filtered one scans the summaries once (only the experiment's, when it names one),
counting the total, and slices the matches the same way. ``tests/scheduler/test_run_index.py``
checks both against a plain filter and sort.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
    sweep: bool  # a sweep run (RunRecord.sweep set)
    pipeline: bool  # a pipeline run (RunRecord.pipeline set)
    folded_id: str  # the run id in lower case: what a search looks in

    @property
    def key(self) -> Key:
        return (self.created_at, self.run_id)


def summary_of(rec: m.RunRecord | q.IndexedRun) -> Summary:
    return Summary(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        state=rec.state,
        created_at=rec.created_at,
        tags=rec.tags,
        parent_id=rec.parent_id,
        metrics=rec.metrics,
        sweep=rec.sweep is not None if isinstance(rec, m.RunRecord) else rec.is_sweep,
        pipeline=rec.pipeline is not None if isinstance(rec, m.RunRecord) else rec.is_pipeline,
        folded_id=rec.run_id.lower(),
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


class SortedKeys:
    """Run keys, ascending. Adding in key order (as loading and new runs do) is an append; a key
    added out of order makes the list sorted once, when it is next read."""

    def __init__(self) -> None:
        self._keys: list[Key] = []
        self._unsorted = False

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Key) -> None:
        if self._keys and key < self._keys[-1]:
            self._unsorted = True
        self._keys.append(key)

    def remove(self, key: Key) -> None:
        keys = self.sorted()
        del keys[bisect_left(keys, key)]

    def sorted(self) -> list[Key]:
        if self._unsorted:
            self._keys.sort()
            self._unsorted = False
        return self._keys


@dataclass
class _Experiment:
    """One experiment's runs, kept current as they change."""

    keys: SortedKeys = field(default_factory=SortedKeys)
    states: Counter[str] = field(default_factory=Counter)


def matcher(query: q.RunQuery) -> Callable[[Summary], bool]:
    """``q.admits`` for one query, over summaries: what a scan calls once per run
    (``tests/scheduler/test_run_index.py`` checks every page against ``q.admits``)."""
    states = frozenset(query.states)
    search = (query.search or "").lower()
    tags = query.tags

    def keep(s: Summary) -> bool:
        return (
            (not query.sweeps or s.sweep)
            and (not query.pipelines or s.pipeline)
            and (query.experiment is None or s.experiment == query.experiment)
            and (not states or s.state in states)
            and (query.target is None or s.target == query.target)
            and (query.created_since is None or s.created_at >= query.created_since)
            and (query.include_children or s.parent_id is None)
            and (query.parent_id is None or s.parent_id == query.parent_id)
            and (not search or search in s.folded_id)
            and all(k in s.tags and (v is None or s.tags[k] == v) for k, v in tags)
        )

    return keep


class RunIndex:
    def __init__(self) -> None:
        self._runs: dict[str, Summary] = {}
        self._all = SortedKeys()
        self._experiments: dict[str, _Experiment] = {}
        self._states: dict[RunState, SortedKeys] = {}  # the few active runs, found at once

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> Summary | None:
        return self._runs.get(run_id)

    def update(self, rec: m.RunRecord | q.IndexedRun) -> None:
        """The run as stored now (new or changed). A run's experiment and creation time do
        not change, so a change moves no key; the index copes if they do."""
        new = summary_of(rec)
        old = self._runs.pop(rec.run_id, None)
        moved = old is None or (old.key, old.experiment) != (new.key, new.experiment)
        if old is not None:
            self._leave(old, moved)
            if old.state is not new.state or old.key != new.key:
                self._states[old.state].remove(old.key)
        if old is None or old.state is not new.state or old.key != new.key:
            self._states.setdefault(new.state, SortedKeys()).add(new.key)
        self._runs[new.run_id] = new
        group = self._experiments.setdefault(new.experiment, _Experiment())
        group.states[str(new.state)] += 1
        if moved:
            self._all.add(new.key)
            group.keys.add(new.key)

    def _leave(self, old: Summary, moved: bool) -> None:
        group = self._experiments[old.experiment]
        group.states[str(old.state)] -= 1
        if not group.states[str(old.state)]:
            del group.states[str(old.state)]
        if moved:
            self._all.remove(old.key)
            group.keys.remove(old.key)
            if not group.keys:
                del self._experiments[old.experiment]

    def update_all(self, recs: Iterable[m.RunRecord]) -> None:
        for rec in recs:
            self.update(rec)

    def query(self, query: q.RunQuery) -> q.RunPageOrError:
        why = q.problem(query)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why)
        if not q.filtered(query):
            return window(self._all.sorted(), query)
        keep, runs = matcher(query), self._runs
        return window([k for k in self._pool(query) if keep(runs[k[1]])], query)

    def _pool(self, query: q.RunQuery) -> list[Key]:
        """The fewest runs a filtered query need look at: its experiment's, or those in its
        states, or every run."""
        pools = [self._all.sorted()]
        if query.experiment is not None:
            group = self._experiments.get(query.experiment)
            pools.append(group.keys.sorted() if group is not None else [])
        if query.states:
            found = [self._states[s].sorted() for s in set(query.states) if s in self._states]
            pools.append(found[0] if len(found) == 1 else sorted(k for f in found for k in f))
        return min(pools, key=len)

    def _best(self, query: q.ExperimentsQuery) -> dict[str, tuple[float, Key, float]]:
        """Per experiment, its best run for the query's metric: (score, run key, value)."""
        best: dict[str, tuple[float, Key, float]] = {}
        metric, sign = query.metric, 1.0 if query.goal == "max" else -1.0
        if metric is None:
            return best
        for s in self._runs.values():
            value = s.metrics.get(metric)
            if value is None or not math.isfinite(value):
                continue
            found = best.get(s.experiment)
            scored = (value * sign, s.key, value)  # ties: the newer run
            if found is None or scored[:2] > found[:2]:
                best[s.experiment] = scored
        return best

    def experiments(self, query: q.ExperimentsQuery) -> q.ExperimentList:
        best = self._best(query)
        found = []
        for name, group in self._experiments.items():
            latest = group.keys.sorted()[-1]
            top = best.get(name)
            found.append(
                q.ExperimentSummary(
                    name=name,
                    runs=len(group.keys),
                    states=dict(sorted(group.states.items())),
                    latest_run_id=latest[1],
                    latest_created_at=latest[0],
                    best_value=top[2] if top is not None else None,
                    best_run_id=top[1][1] if top is not None else None,
                )
            )
        found.sort(key=lambda e: (e.latest_created_at, e.latest_run_id, e.name), reverse=True)
        return q.ExperimentList(experiments=found)


def answer(index: RunIndex, request: q.RunQuery | q.ExperimentsQuery) -> m.Message:
    """The reply to a query of the index."""
    if isinstance(request, q.RunQuery):
        return index.query(request)
    return index.experiments(request)
