"""Records held in memory share what repeats, and stay equal to what was stored."""

from __future__ import annotations

from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.compact import Compactor
from tests.builders import record, spec


def decoded(rec: m.RunRecord) -> m.RunRecord:
    return codec.decode(m.RunRecord, codec.encode(rec))  # as a load reads it: a fresh copy


def test_a_compacted_record_equals_the_stored_one_and_encodes_the_same() -> None:
    env = m.Environment(python=m.PythonEnvironment(user_managed=False, pip=["numpy==2.0"]))
    recs = [
        record("plain"),
        record(
            "full",
            RunState.RUNNING,
            tags={"team": "vision"},
            spec=spec(environment=env, arguments=["--lr", "0.1"], env_vars={"A": "1"}),
        ),
    ]
    c = Compactor()
    for rec in recs:
        stored = decoded(rec)
        kept = c.record(stored)
        assert kept == rec
        assert codec.encode(kept) == codec.encode(rec)


def test_repeated_parts_are_held_once() -> None:
    env = m.Environment(python=m.PythonEnvironment(user_managed=False, pip=["torch"]))
    c = Compactor()
    a = c.record(decoded(record("a", spec=spec(environment=env))))
    b = c.record(decoded(record("b", spec=spec(environment=env))))
    other = c.record(decoded(record("c")))  # another environment between
    d = c.record(decoded(record("d", spec=spec(environment=env))))
    assert a.spec.environment is b.spec.environment is d.spec.environment
    assert other.spec.environment is not a.spec.environment
    assert a.spec.resources is b.spec.resources
    assert a.spec.snapshot_id is b.spec.snapshot_id
    assert a.tags is b.tags and a.artifacts is b.artifacts  # the empty ones
