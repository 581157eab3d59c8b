"""The runs table keeps its queue, classes and subsets equal to what a walk over every row
would find, whatever sequence of changes it is given."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.proto.states import ON_AGENT, RunState
from sortie.scheduler.placement import class_key, queue_order
from sortie.scheduler.run_table import RunTable
from tests.builders import record, spec

STATES = [RunState.QUEUED, RunState.PREPARING, RunState.RUNNING, RunState.COMPLETED]


@st.composite
def records(draw: st.DrawFn) -> m.RunRecord:
    return record(
        draw(st.sampled_from(["a", "b", "c", "d", "e"])),
        draw(st.sampled_from(STATES)),
        created_at=float(draw(st.integers(0, 3))),
        waiting=draw(st.sampled_from([None, m.TargetWait(reason="no agent", since=0.0)])),
        spec=spec(
            priority=draw(st.integers(0, 2)),
            target=draw(st.sampled_from(["local", "gpu"])),
            resources=m.Resources(cpus=draw(st.sampled_from([1, 2]))),
            queue_timeout_s=draw(st.sampled_from([None, 60.0])),
        ),
    )


changes = st.lists(
    st.tuples(st.sampled_from(["put", "load", "forget", "delete"]), records()), max_size=40
)


def check(table: RunTable) -> None:
    rows = list(table.values())
    queued = [r for r in rows if r.state is RunState.QUEUED]
    assert list(table.queued()) == queue_order(queued)
    assert table.queued_count == len(queued)
    assert dict(table.classes) == Counter(class_key(r.spec) for r in queued)
    assert {r.run_id for r in table.timed()} == {
        r.run_id for r in queued if r.spec.queue_timeout_s is not None
    }
    assert {r.run_id for r in table.waiting()} == {
        r.run_id for r in queued if r.waiting is not None
    }
    assert {r.run_id for r in table.on_agent()} == {r.run_id for r in rows if r.state in ON_AGENT}


@settings(max_examples=300, deadline=None)
@given(changes)
def test_every_index_matches_a_walk_over_the_rows(ops: list[tuple[str, m.RunRecord]]) -> None:
    table = RunTable()
    for op, rec in ops:
        if op in ("put", "load"):
            getattr(table, op)(rec.run_id, rec)
        else:
            getattr(table, op)(rec.run_id)
        check(table)


def test_a_table_made_from_rows_indexes_them() -> None:
    rows = {
        "q": record("q", created_at=2.0),
        "old": record("old", created_at=1.0),
        "r": record("r", RunState.RUNNING),
    }
    table = RunTable(rows)
    assert [r.run_id for r in table.queued()] == ["old", "q"]
    assert [r.run_id for r in table.on_agent()] == ["r"]
    assert table.changed == set()  # loaded, not changed
