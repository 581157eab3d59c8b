"""The table behind each stored kind: its writes mark themselves, a take clears the marks."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from sortie.scheduler.tables import Changes, Table

Op = Callable[[Table[int]], None]


def put(key: str, value: int) -> Op:
    return lambda t: t.put(key, value)


def load(key: str, value: int) -> Op:
    return lambda t: t.load(key, value)


def touch(key: str) -> Op:
    return lambda t: t.touch(key)


def delete(key: str) -> Op:
    return lambda t: t.delete(key)


def forget(key: str) -> Op:
    return lambda t: t.forget(key)


# operations -> rows after them, and what the daemon then writes: (key, value)s, deleted keys
CASES: list[tuple[str, list[Op], dict[str, int], list[tuple[str, int]], list[str]]] = [
    ("a put is written", [put("a", 1)], {"a": 1}, [("a", 1)], []),
    ("the last put wins", [put("a", 1), put("a", 2)], {"a": 2}, [("a", 2)], []),
    (
        "written in key order",
        [put("b", 2), put("a", 1)],
        {"a": 1, "b": 2},
        [("a", 1), ("b", 2)],
        [],
    ),
    ("a loaded row is not written", [load("a", 1)], {"a": 1}, [], []),
    ("a load is what the store holds", [put("a", 1), load("a", 2)], {"a": 2}, [], []),
    ("a touched row is written again", [load("a", 1), touch("a")], {"a": 1}, [("a", 1)], []),
    ("touching no row marks nothing", [touch("a")], {}, [], []),
    ("a delete is deleted", [load("a", 1), delete("a")], {}, [], ["a"]),
    ("a put then deleted is only deleted", [put("a", 1), delete("a")], {}, [], ["a"]),
    ("a put after a delete is written", [delete("a"), put("a", 3)], {"a": 3}, [("a", 3)], []),
    ("a forgotten row stays in the store", [load("a", 1), forget("a")], {}, [], []),
    ("forgetting drops its mark", [put("a", 1), forget("a")], {}, [], []),
    ("others are untouched", [load("z", 9), put("a", 1)], {"a": 1, "z": 9}, [("a", 1)], []),
]


@pytest.mark.parametrize(
    ("ops", "rows", "written", "deleted"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_writes_mark_themselves_and_a_take_clears_the_marks(
    ops: list[Op], rows: dict[str, int], written: list[tuple[str, int]], deleted: list[str]
) -> None:
    t: Table[int] = Table()
    for op in ops:
        op(t)
    assert dict(t) == rows
    assert t.changed == {k for k, _ in written} and t.deleted == set(deleted)
    assert t.take_changes() == Changes(written=written, deleted=deleted)
    # written now: nothing is marked, the rows stay
    assert not t.changed and not t.deleted
    assert t.take_changes() == Changes(written=[], deleted=[])
    assert dict(t) == rows


def test_reads_are_a_mappings() -> None:
    t = Table({"a": 1, "b": 2})
    assert t["a"] == 1 and t.get("b") == 2 and t.get("c") is None and t.get("c", 0) == 0
    assert "a" in t and "c" not in t and len(t) == 2 and sorted(t) == ["a", "b"]
    assert list(t.items()) == [("a", 1), ("b", 2)] and list(t.values()) == [1, 2]
    assert t == {"a": 1, "b": 2} and t != {"a": 1}
    with pytest.raises(KeyError):
        t["c"]
    assert not t.changed  # rows given at construction are as stored


def test_equal_tables_have_equal_rows_and_marks() -> None:
    t = Table({"a": 1})
    copied = copy.deepcopy(t)
    assert copied == t
    copied.touch("a")
    assert copied != t and dict(copied) == dict(t)
    t.touch("a")
    assert copied == t
