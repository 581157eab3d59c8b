"""The run index (SQLite, in memory here): every page equals a plain filter and sort over the
same records, and pages walked either way concatenate to the whole list, without
duplicates."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.scheduler.run_index import RunIndex, row_of
from tests.builders import record, spec
from tests.scheduler.test_pipeline_core import steps
from tests.scheduler.test_sweep_core import sweep_spec

EXPERIMENTS = ["mnist", "bert", "gpt"]
TARGETS = ["local", "gpu"]
STATES = [RunState.QUEUED, RunState.RUNNING, RunState.COMPLETED, RunState.FAILED]


@st.composite
def runs(draw: st.DrawFn) -> list[m.RunRecord]:
    n = draw(st.integers(0, 40))
    out = []
    for i in range(n):
        parent = f"r{draw(st.integers(0, i - 1)):03d}" if i and draw(st.booleans()) else None
        out.append(
            record(
                f"r{i:03d}",
                draw(st.sampled_from(STATES)),
                spec=spec(
                    experiment=draw(st.sampled_from(EXPERIMENTS)),
                    target=draw(st.sampled_from(TARGETS)),
                ),
                created_at=float(draw(st.integers(0, 10))),  # many ties: run id decides
                tags=draw(
                    st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"]))
                ),
                parent_id=parent,
                metrics=draw(st.dictionaries(st.just("loss"), st.floats(0, 1), max_size=1)),
            )
        )
    return out


queries = st.builds(
    q.RunQuery,
    experiment=st.none() | st.sampled_from(EXPERIMENTS),
    states=st.lists(st.sampled_from(STATES), max_size=2),
    target=st.none() | st.sampled_from(TARGETS),
    tags=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.none() | st.sampled_from(["1", "2"])),
        max_size=2,
    ),
    search=st.none() | st.sampled_from(["", "R00", "1", "r02"]),
    created_since=st.none() | st.floats(0, 10),
    include_children=st.booleans(),
    parent_id=st.none() | st.sampled_from(["r000", "r001"]),
    limit=st.integers(1, 7),
)


def plain(recs: list[m.RunRecord], query: q.RunQuery) -> list[str]:
    """What a full scan keeps, newest first."""
    kept = [r for r in recs if q.keeps(query, r)]
    kept.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return [r.run_id for r in kept]


def index_of(recs: list[m.RunRecord]) -> RunIndex:
    index = RunIndex()
    index.update_all(recs)
    return index


def page(index: RunIndex, query: q.RunQuery) -> q.RunPage:
    reply = index.query(query)
    assert isinstance(reply, q.RunPage)
    return reply


@settings(max_examples=200, deadline=None)
@given(runs(), queries)
def test_pages_walked_older_are_the_plain_scan(recs: list[m.RunRecord], query: q.RunQuery) -> None:
    index = index_of(recs)
    expected = plain(recs, query)
    seen: list[str] = []
    current = page(index, query)
    assert current.newer is None  # the first page
    for _ in range(len(recs) + 1):
        assert current.total == len(expected)
        assert len(current.run_ids) <= query.limit
        seen += current.run_ids
        if current.older is None:
            break
        current = page(index, q.RunQuery(**{**_fields(query), "before": current.older}))
    assert seen == expected


@settings(max_examples=100, deadline=None)
@given(runs(), queries)
def test_pages_walked_newer_from_the_end_are_the_plain_scan(
    recs: list[m.RunRecord], query: q.RunQuery
) -> None:
    index = index_of(recs)
    expected = plain(recs, query)
    oldest = q.RunCursor(created_at=-1.0, run_id="")
    current = page(index, q.RunQuery(**{**_fields(query), "after": oldest}))
    seen: list[str] = []
    for _ in range(len(recs) + 1):
        seen = current.run_ids + seen
        if current.newer is None:
            break
        current = page(index, q.RunQuery(**{**_fields(query), "after": current.newer}))
    assert seen == expected


def _fields(query: q.RunQuery) -> dict[str, object]:
    return {f: getattr(query, f) for f in query.__struct_fields__}


@given(runs())
def test_updates_in_any_order_keep_the_newest_record(recs: list[m.RunRecord]) -> None:
    index = index_of(list(reversed(recs)))
    for rec in recs:  # every run changes state once more
        index.update(
            record(rec.run_id, RunState.CANCELED, spec=rec.spec, created_at=rec.created_at)
        )
    listed = page(index, q.RunQuery(limit=q.MAX_LIMIT, states=[RunState.CANCELED]))
    assert listed.total == len(recs)
    assert listed.run_ids == plain(recs, q.RunQuery())


@settings(max_examples=100, deadline=None)
@given(runs(), st.lists(st.tuples(st.integers(0, 39), st.sampled_from(STATES)), max_size=30))
def test_experiments_stay_current_through_changes(
    recs: list[m.RunRecord], changes: list[tuple[int, RunState]]
) -> None:
    index = index_of(recs)
    latest = {r.run_id: r for r in recs}
    for i, state in changes:
        if i < len(recs):
            changed = msgspec.structs.replace(latest[recs[i].run_id], state=state)
            latest[changed.run_id] = changed
            index.update(changed)
    listed = index.experiments(q.ExperimentsQuery(metric="loss", goal="min")).experiments
    names = {r.spec.experiment for r in latest.values()}
    assert [e.name for e in listed] == sorted(
        names,
        key=lambda n: max(
            (r.created_at, r.run_id) for r in latest.values() if r.spec.experiment == n
        ),
        reverse=True,
    )
    for e in listed:
        mine = [r for r in latest.values() if r.spec.experiment == e.name]
        assert e.runs == len(mine)
        assert e.states == dict(sorted(Counter(str(r.state) for r in mine).items()))
        scored = [(r.metrics["loss"], -r.created_at, r.run_id) for r in mine if "loss" in r.metrics]
        best = min(scored, default=None)
        assert e.best_value == (best[0] if best else None)
    now = list(latest.values())
    for states in ([RunState.RUNNING], [RunState.QUEUED, RunState.FAILED]):
        asked = q.RunQuery(states=states, limit=q.MAX_LIMIT)
        assert page(index, asked).run_ids == plain(now, asked)


def r_key(r: m.RunRecord) -> tuple[float, str]:
    return (r.created_at, r.run_id)


def test_a_run_whose_created_at_changes_moves() -> None:
    index = index_of([record("a", created_at=1.0), record("b", created_at=2.0)])
    index.update(record("a", created_at=3.0))
    assert page(index, q.RunQuery()).run_ids == ["a", "b"]
    assert len(index) == 2
    index.update(record("a", spec=spec(experiment="other"), created_at=3.0))
    found = index.experiments(q.ExperimentsQuery()).experiments
    assert [(e.name, e.runs, e.latest_run_id) for e in found] == [
        ("other", 1, "a"),
        ("exp", 1, "b"),
    ]
    assert page(index, q.RunQuery(experiment="exp")).run_ids == ["b"]


@pytest.mark.parametrize(
    ("query", "why"),
    [
        (q.RunQuery(limit=0), "a page holds 1 to 1000 runs (limit 0 asked)"),
        (q.RunQuery(limit=1001), "a page holds 1 to 1000 runs (limit 1001 asked)"),
        (
            q.RunQuery(
                before=q.RunCursor(created_at=1, run_id="a"),
                after=q.RunCursor(created_at=1, run_id="a"),
            ),
            "a page is either before or after a run, not both",
        ),
    ],
)
def test_bad_queries_are_refused_with_the_reason(query: q.RunQuery, why: str) -> None:
    assert RunIndex().query(query) == m.ErrorReply(code="bad_request", message=why)


def test_experiments_count_states_and_find_the_best_metric() -> None:
    recs = [
        record("m1", RunState.COMPLETED, created_at=1.0, metrics={"loss": 0.5}),
        record("m2", RunState.FAILED, created_at=2.0, metrics={"loss": 0.2, "acc": 0.9}),
        record("m3", RunState.RUNNING, created_at=3.0),
        record("b1", RunState.QUEUED, spec=spec(experiment="bert"), created_at=9.0),
    ]
    index = index_of(recs)
    low = index.experiments(q.ExperimentsQuery(metric="loss", goal="min")).experiments
    assert [e.name for e in low] == ["bert", "exp"]  # the most recently used first
    bert, exp = low
    assert (bert.runs, bert.states, bert.latest_run_id, bert.best_value) == (
        1,
        {"Queued": 1},
        "b1",
        None,
    )
    assert (exp.runs, exp.latest_run_id, exp.latest_created_at) == (3, "m3", 3.0)
    assert exp.states == {"Completed": 1, "Failed": 1, "Running": 1}
    assert (exp.best_value, exp.best_run_id) == (0.2, "m2")
    high = index.experiments(q.ExperimentsQuery(metric="loss", goal="max")).experiments[1]
    assert (high.best_value, high.best_run_id) == (0.5, "m1")
    none = index.experiments(q.ExperimentsQuery()).experiments[1]
    assert (none.best_value, none.best_run_id) == (None, None)


def test_the_index_read_of_a_record_summarises_it_as_the_whole_record() -> None:
    """``IndexedRun`` (what a scheduler decodes when it reads the index whole) gives the
    summary the whole record gives, a sweep's and a pipeline's included."""
    sweep = m.Sweep(spec=sweep_spec())
    pipeline = p.Pipeline(spec=p.PipelineSpec(name="etl", steps=steps()))
    records = [
        record("plain", RunState.QUEUED),
        record(
            "kid",
            RunState.COMPLETED,
            spec=spec(experiment="e", target="gpu"),
            created_at=5.0,
            tags={"a": "b"},
            parent_id="sw",
            metrics={"acc": 0.5},
        ),
        record("sw", RunState.RUNNING, sweep=sweep),
        record("pipe", RunState.RUNNING, pipeline=pipeline),
    ]
    for rec in records:
        read = codec.decode(q.IndexedRun, codec.encode(rec))
        assert row_of(read, 7) == row_of(rec, 7), rec.run_id
        assert (read.tags, read.metrics) == (rec.tags, rec.metrics), rec.run_id
    assert row_of(codec.decode(q.IndexedRun, codec.encode(records[2])), 0)[6] == 1  # sweep
    assert row_of(codec.decode(q.IndexedRun, codec.encode(records[3])), 0)[7] == 1  # pipeline
