"""The pipeline graph as tables: edges from data and run_after, orders, reach, cycles."""

from __future__ import annotations

import pytest

from sortie.proto.pipelines import PipelineSpec
from sortie.scheduler.pipelines.dag import build, cycle, downstream, order, upstream
from tests.scheduler.pipelines.builders import pipeline, step

LINEAR = pipeline(step("prep", [], ["a"]), step("train", ["a"], ["b"]), step("eval", ["b"]))
DIAMOND = pipeline(
    step("d", ["b", "c"]),  # listed first: order still puts it last
    step("a", [], ["x"]),
    step("b", ["x"], ["b"]),
    step("c", ["x"], ["c"]),
)
FAN = pipeline(
    step("prep", [], ["p"]),
    *(step(f"w{i}", ["p"], [f"o{i}"]) for i in range(3)),
    step("join", [f"o{i}" for i in range(3)]),
)
AFTER = pipeline(step("a"), step("b", run_after=["a"]), step("c", run_after=["b", "a"]))
FREE = pipeline(step("z"), step("y"), step("x"))

# (what, spec, topological order)
ORDERS = [
    ("linear", LINEAR, ["prep", "train", "eval"]),
    ("diamond: spec order among free steps", DIAMOND, ["a", "b", "c", "d"]),
    ("fan-out", FAN, ["prep", "w0", "w1", "w2", "join"]),
    ("run_after only", AFTER, ["a", "b", "c"]),
    ("no edges: the spec's order", FREE, ["z", "y", "x"]),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in ORDERS], ids=[c[0] for c in ORDERS])
def test_order(spec: PipelineSpec, expected: list[str]) -> None:
    dag = build(spec)
    assert order(dag) == expected
    assert cycle(dag) is None


def test_edges_and_reach() -> None:
    dag = build(DIAMOND)
    assert dag.needs == {"d": ("b", "c"), "a": (), "b": ("a",), "c": ("a",)}
    assert dag.feeds == {"d": (), "a": ("b", "c"), "b": ("d",), "c": ("d",)}
    assert dag.producer == {"x": "a", "b": "b", "c": "c"}
    assert upstream(dag, "d") == {"a", "b", "c"}
    assert upstream(dag, "a") == set()
    assert downstream(dag, "a") == {"b", "c", "d"}
    assert downstream(dag, "b") == {"d"}
    assert downstream(dag, "d") == set()


def test_run_after_and_data_edge_counted_once() -> None:
    dag = build(pipeline(step("a", [], ["x"]), step("b", ["x"], run_after=["a"])))
    assert dag.needs["b"] == ("a",)
    assert dag.feeds["a"] == ("b",)


def test_wrong_specs_still_build() -> None:
    """Unknown inputs and run_after add no edge; the first of two producers counts."""
    spec = pipeline(
        step("a", ["ghost"], ["x"], run_after=["nobody"]),
        step("b", [], ["x"]),
        step("c", ["x"]),
    )
    dag = build(spec)
    assert dag.needs == {"a": (), "b": (), "c": ("a",)}
    assert dag.producer == {"x": "a"}


# (what, spec, the cycle named)
CYCLES = [
    ("two steps by data", pipeline(step("a", ["y"], ["x"]), step("b", ["x"], ["y"])), "a b a"),
    ("itself by run_after", pipeline(step("a", run_after=["a"])), "a a"),
    (
        "three, after a tail",
        pipeline(
            step("t", [], ["s"]),
            step("a", ["s", "c"], ["a"]),
            step("b", ["a"], ["b"]),
            step("c", ["b"], ["c"]),
        ),
        "a b c a",
    ),
    (
        "by run_after and data",
        pipeline(step("a", [], ["x"], run_after=["b"]), step("b", ["x"])),
        "a b a",
    ),
]


@pytest.mark.parametrize(("spec", "named"), [c[1:] for c in CYCLES], ids=[c[0] for c in CYCLES])
def test_cycle_is_named(spec: PipelineSpec, named: str) -> None:
    dag = build(spec)
    assert cycle(dag) == named.split()
    with pytest.raises(ValueError, match="cycle: " + " -> ".join(named.split())):
        order(dag)


def test_long_chain_needs_no_recursion() -> None:
    n = 3_000
    spec = pipeline(*(step(f"s{i}", [f"d{i - 1}"] if i else [], [f"d{i}"]) for i in range(n)))
    dag = build(spec)
    assert cycle(dag) is None
    assert order(dag) == [f"s{i}" for i in range(n)]
    assert len(upstream(dag, f"s{n - 1}")) == n - 1
