"""``validate.problem`` as a table: every refusal says what is wrong and what to change; a
good pipeline passes."""

from __future__ import annotations

import pytest

from sortie.proto.pipelines import (
    MAX_STEPS,
    ParamValue,
    PipelineRequest,
    PipelineSpec,
    data_token,
    param_token,
)
from sortie.scheduler.pipelines.validate import problem
from tests.scheduler.pipelines.builders import pipeline, step

GOOD = pipeline(
    step("prep", [], ["clean"], arguments=["--out", data_token("clean"), param_token("rows")]),
    step("train", ["clean"], ["model"]),
    step("eval", ["model", "clean"], run_after=["prep"]),
    parameters={"rows": 10, "lr": 0.1, "name": "x", "fast": True},
)


def _req(spec: PipelineSpec, values: dict[str, ParamValue] | None = None) -> PipelineRequest:
    return PipelineRequest(spec=spec, parameters=values or {})


def test_a_good_pipeline_passes() -> None:
    assert problem(_req(GOOD)) is None
    assert problem(_req(GOOD, {"rows": 5, "lr": 1, "name": "y", "fast": False})) is None


# (what, request, words the message must hold)
CASES: list[tuple[str, PipelineRequest, list[str]]] = [
    ("no steps", _req(pipeline()), ["no steps", "give at least one"]),
    (
        "too many steps",
        _req(pipeline(*(step(f"s{i}") for i in range(MAX_STEPS + 1)))),
        ["1,001 steps", "1,000 or fewer"],
    ),
    ("bad step name", _req(pipeline(step("9lives"))), ["'9lives'", "not valid", "a letter"]),
    ("repeated step", _req(pipeline(step("a"), step("a"))), ["two steps", "'a'", "its own name"]),
    (
        "bad parameter name",
        _req(pipeline(step("a"), parameters={"has space": 1})),
        ["parameter name 'has space'", "not valid"],
    ),
    (
        "value for an undeclared parameter",
        _req(pipeline(step("a"), parameters={"lr": 0.1}), {"epochs": 3}),
        ["'epochs'", "does not declare", "'lr'", "declare it"],
    ),
    (
        "str for an int",
        _req(GOOD, {"rows": "ten"}),
        ["'rows'", "'ten' (str)", "default 10 is a whole number (int)", "give a whole number"],
    ),
    ("float for an int", _req(GOOD, {"rows": 2.5}), ["'rows'", "(float)", "give a whole number"]),
    ("bool for an int", _req(GOOD, {"rows": True}), ["'rows'", "(bool)", "give a whole number"]),
    ("int for a bool", _req(GOOD, {"fast": 1}), ["'fast'", "(int)", "give true or false"]),
    ("int for a str", _req(GOOD, {"name": 3}), ["'name'", "give text"]),
    ("bool for a float", _req(GOOD, {"lr": False}), ["'lr'", "give a number (float)"]),
    (
        "bad data name",
        _req(pipeline(step("a", [], ["no/slash"]))),
        ["step 'a'", "output name 'no/slash'", "not valid"],
    ),
    (
        "input listed twice",
        _req(pipeline(step("a", [], ["x"]), step("b", ["x", "x"]))),
        ["step 'b'", "input 'x' twice"],
    ),
    (
        "reads its own output",
        _req(pipeline(step("a", ["x"], ["x"]))),
        ["step 'a' reads its own output 'x'", "another name"],
    ),
    (
        "two producers",
        _req(pipeline(step("a", [], ["x"]), step("b", [], ["x"]))),
        ["'a' and 'b' both write 'x'", "one producer"],
    ),
    (
        "input nobody produces",
        _req(pipeline(step("a", ["ghost"]))),
        ["step 'a' reads 'ghost'", "no step writes", "add it to the outputs"],
    ),
    (
        "run_after naming no step",
        _req(pipeline(step("a", run_after=["nope"]))),
        ["step 'a' runs after 'nope'", "no step", "remove it from run_after"],
    ),
    (
        "data token for data neither read nor written",
        _req(pipeline(step("a", [], ["x"], arguments=[data_token("y")]))),
        ["step 'a'", "{sortie-data:y}", "neither reads nor writes 'y'"],
    ),
    (
        "param token for an undeclared parameter",
        _req(pipeline(step("a", arguments=["--lr", param_token("lr")]))),
        ["step 'a'", "{sortie-param:lr}", "declares no parameter 'lr'"],
    ),
    (
        "a cycle, named",
        _req(
            pipeline(
                step("s", [], ["seed"]), step("a", ["b", "seed"], ["a"]), step("b", ["a"], ["b"])
            )
        ),
        ["cycle: a -> b -> a", "remove one of those"],
    ),
    (
        "a cycle by run_after",
        _req(pipeline(step("a", run_after=["b"]), step("b", run_after=["a"]))),
        ["cycle: a -> b -> a"],
    ),
]


@pytest.mark.parametrize(("request_", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals(request_: PipelineRequest, words: list[str]) -> None:
    said = problem(request_)
    assert said is not None
    for word in words:
        assert word in said, (word, said)
