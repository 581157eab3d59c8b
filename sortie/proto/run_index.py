"""Asking the scheduler's run index: pages of run ids and experiment summaries.

The scheduler keeps a small summary of every stored run in memory (``scheduler/run_index.py``)
so that a client lists runs without reading every record: it asks for one page of run ids
(``RunQuery`` on ``sortie.api.runs.query`` -> ``RunPage``), then gets those records by key.
``admits`` is the one rule for which runs a query keeps: the index applies it to its
summaries, a dashboard to the records it watches, a client's full scan to the records it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from sortie.proto.messages import ErrorReply, Message, RunRecord
from sortie.proto.states import RunState

MAX_LIMIT = 1000  # run ids in one page at most
LATEST_METRICS = 32  # latest metric values a run record keeps at most (RunRecord.metrics)


class IndexedSpec(Message, frozen=True, kw_only=True):
    """The part of a ``RunSpec`` the run index keeps (its defaults are RunSpec's)."""

    experiment: str
    target: str = "local"


class IndexedRun(Message, frozen=True, kw_only=True):
    """A stored ``RunRecord`` read for the run index only: the fields it keeps, decoded several
    times faster than the whole record (the rest is skipped, a sweep's and a pipeline's
    status left undecoded). Its defaults are RunRecord's."""

    run_id: str
    spec: IndexedSpec
    state: RunState
    created_at: float
    tags: dict[str, str] = {}
    parent_id: str | None = None
    metrics: dict[str, float] = {}
    sweep: msgspec.Raw = msgspec.Raw(b"null")
    pipeline: msgspec.Raw = msgspec.Raw(b"null")

    @property
    def is_sweep(self) -> bool:
        return bytes(self.sweep) not in (b"", b"null")

    @property
    def is_pipeline(self) -> bool:
        return bytes(self.pipeline) not in (b"", b"null")


class RunCursor(Message, frozen=True, kw_only=True):
    """Where a page ends: the last (or first) run shown. Runs are ordered by
    ``(created_at, run_id)``, newest first."""

    created_at: float
    run_id: str


class RunQuery(Message, frozen=True, kw_only=True, tag="run_query"):
    """Runs, newest first; every filter given must hold."""

    experiment: str | None = None
    states: list[RunState] = []  # any of them (none: every state)
    target: str | None = None
    tags: list[tuple[str, str | None]] = []  # (key, value): has the tag (with that value)
    search: str | None = None  # the run id contains this (any case)
    created_since: float | None = None
    include_children: bool = True
    parent_id: str | None = None  # only the children of this run
    sweeps: bool = False  # only sweep runs (RunRecord.sweep set)
    pipelines: bool = False  # only pipeline runs (RunRecord.pipeline set)
    limit: int = 50  # 1 to MAX_LIMIT
    before: RunCursor | None = None  # the page of runs older than this one
    after: RunCursor | None = None  # the page of runs newer than this one (nearest first)


class RunPage(Message, frozen=True, kw_only=True, tag="run_page"):
    run_ids: list[str]  # newest first
    total: int  # runs matching the query's filters, on every page
    older: RunCursor | None = None  # ask ``before=older`` for the next page (None: last)
    newer: RunCursor | None = None  # ask ``after=newer`` for the page before (None: first)


RunPageOrError = RunPage | ErrorReply

Goal = Literal["max", "min"]


class ExperimentsQuery(Message, frozen=True, kw_only=True, tag="experiments_query"):
    metric: str | None = None  # the best value of this metric (RunRecord.metrics) per experiment
    goal: Goal = "max"


class ExperimentSummary(Message, frozen=True, kw_only=True):
    name: str
    runs: int
    states: dict[str, int]  # run state -> how many
    latest_run_id: str
    latest_created_at: float
    best_value: float | None = None
    best_run_id: str | None = None


class ExperimentList(Message, frozen=True, kw_only=True, tag="experiment_list"):
    experiments: list[ExperimentSummary]  # the most recently used first


ExperimentListOrError = ExperimentList | ErrorReply


def problem(q: RunQuery) -> str | None:
    """What is wrong with a query, said to its sender; None when it can be answered."""
    if not 1 <= q.limit <= MAX_LIMIT:
        return f"a page holds 1 to {MAX_LIMIT} runs (limit {q.limit} asked)"
    if q.before is not None and q.after is not None:
        return "a page is either before or after a run, not both"
    return None


def filtered(q: RunQuery) -> bool:
    """Whether the query keeps fewer than every run."""
    return bool(
        q.experiment is not None
        or q.states
        or q.target is not None
        or q.tags
        or q.search
        or q.created_since is not None
        or not q.include_children
        or q.parent_id is not None
        or q.sweeps
        or q.pipelines
    )


def admits(
    q: RunQuery,
    *,
    run_id: str,
    experiment: str,
    target: str,
    state: RunState,
    created_at: float,
    tags: Mapping[str, str],
    parent_id: str | None,
) -> bool:
    """Whether the run passes every filter of ``q`` (its cursors aside) but ``sweeps`` and
    ``pipelines``, which only a record says (``keeps``; the index keeps it in its summary)."""
    return (
        (q.experiment is None or experiment == q.experiment)
        and (not q.states or state in q.states)
        and (q.target is None or target == q.target)
        and (q.created_since is None or created_at >= q.created_since)
        and (q.include_children or parent_id is None)
        and (q.parent_id is None or parent_id == q.parent_id)
        and (not q.search or q.search.lower() in run_id.lower())
        and all(k in tags and (v is None or tags[k] == v) for k, v in q.tags)
    )


def keeps(q: RunQuery, rec: RunRecord) -> bool:
    """Whether the stored run passes every filter of ``q`` (its cursors aside)."""
    if (q.sweeps and rec.sweep is None) or (q.pipelines and rec.pipeline is None):
        return False
    return admits(
        q,
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        state=rec.state,
        created_at=rec.created_at,
        tags=rec.tags,
        parent_id=rec.parent_id,
    )
