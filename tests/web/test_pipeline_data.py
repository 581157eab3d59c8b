"""What the pipeline views show, from records (pure: no broker): the list's counts, the graph's
edges and layers, each step's row (reuse, what changed, why skipped), the parameters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.web import pipeline_data
from tests.builders import record, spec

S = p.StepState


def step(name: str, *, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
         after: tuple[str, ...] = (), reuse: bool = True) -> p.StepSpec:  # fmt: skip
    return p.StepSpec(
        name=name,
        run=spec(script=f"{name}.py", target="cpu" if name != "train" else "gpu"),
        inputs=list(inputs),
        outputs=list(outputs),
        run_after=list(after),
        allow_reuse=reuse,
    )


# prep -> prepped -> train -> model -> evaluate; lint beside them; report after evaluate
# (scores) and lint (run_after)
STEPS = [
    step("prep", outputs=("prepped",)),
    step("train", inputs=("prepped",), outputs=("model",)),
    step("evaluate", inputs=("model", "prepped"), outputs=("scores",)),
    step("lint", reuse=False),
    step("report", inputs=("scores",), after=("lint",)),
]
SPEC = p.PipelineSpec(name="flow", steps=STEPS, parameters={"epochs": 3, "lr": 0.1})


def pipeline(**steps: p.StepStatus) -> p.Pipeline:
    return p.Pipeline(spec=SPEC, parameters={"epochs": 5, "lr": 0.1}, steps=steps)


FAILED = pipeline(
    prep=p.StepStatus(state=S.REUSED, run_id="old_prep", changed=[]),
    train=p.StepStatus(
        state=S.COMPLETED,
        run_id="pl_train",
        changed=["script", "inputs.prepped"],
        ran_because="key changed",
    ),
    evaluate=p.StepStatus(
        state=S.FAILED, run_id="pl_evaluate", ran_because="no earlier run", reason="exit code 1"
    ),
    lint=p.StepStatus(
        state=S.COMPLETED, run_id="pl_lint", changed=[], ran_because="allow_reuse is off"
    ),
    report=p.StepStatus(state=S.SKIPPED, reason="evaluate failed"),
)  # fmt: skip


def test_the_summary_counts_steps_by_state_and_says_how_long() -> None:
    rec = record(
        "pl", RunState.FAILED, pipeline=FAILED, created_at=100.0, started_at=101.0,
        ended_at=161.5, error=m.RunError(kind=ErrorKind.EXIT_CODE, message="step evaluate failed"),
    )  # fmt: skip
    row = pipeline_data.summary(rec)
    assert row["steps"] == {
        "completed": 2, "reused": 1, "failed": 1, "skipped": 1, "canceled": 0,
        "running": 0, "waiting": 0, "total": 5,
    }  # fmt: skip
    assert (row["name"], row["state"], row["terminal"]) == ("flow", "Failed", True)
    assert row["duration_s"] == 60.5 and row["error"] == "step evaluate failed"
    going = pipeline_data.summary(
        record("pl2", RunState.RUNNING, pipeline=pipeline(), created_at=7.0)
    )
    assert going["steps"]["waiting"] == 5 and going["duration_s"] is None
    assert going["started_at"] == 7.0  # not started yet: since it was created


def test_edges_carry_the_data_between_two_steps_and_run_after() -> None:
    assert pipeline_data.edges(SPEC) == [
        {"from": "prep", "to": "train", "data": ["prepped"], "run_after": False},
        {"from": "train", "to": "evaluate", "data": ["model"], "run_after": False},
        {"from": "prep", "to": "evaluate", "data": ["prepped"], "run_after": False},
        {"from": "evaluate", "to": "report", "data": ["scores"], "run_after": False},
        {"from": "lint", "to": "report", "data": [], "run_after": True},
    ]
    both = p.PipelineSpec(
        name="x",
        steps=[step("a", outputs=("d1", "d2")), step("b", inputs=("d1", "d2"), after=("a",))],
    )
    assert pipeline_data.edges(both) == [
        {"from": "a", "to": "b", "data": ["d1", "d2"], "run_after": True}
    ]


def test_the_graph_lays_steps_out_in_layers_by_their_deepest_upstream_step() -> None:
    g = pipeline_data.graph(FAILED)
    at = {n["name"]: (n["layer"], n["slot"], n["state"]) for n in g["nodes"]}
    assert at == {
        "prep": (0, 0, "reused"),
        "lint": (0, 1, "completed"),
        "train": (1, 0, "completed"),
        "evaluate": (2, 0, "failed"),
        "report": (3, 0, "skipped"),
    }
    assert (g["layers"], g["width"]) == (4, 2)


def test_a_cycle_which_validation_refuses_still_draws() -> None:
    loop = p.PipelineSpec(
        name="loop",
        steps=[step("a", inputs=("y",), outputs=("x",)), step("b", inputs=("x",), outputs=("y",)),
               step("c")],
    )  # fmt: skip
    layer = pipeline_data.layers(loop, pipeline_data.edges(loop))
    assert layer == {"c": 0, "a": 1, "b": 1}


def test_within_a_layer_steps_sit_near_their_upstream_steps() -> None:
    crossed = p.PipelineSpec(
        name="x",
        steps=[step("a", outputs=("da",)), step("b", outputs=("db",)),
               step("from_b", inputs=("db",)), step("from_a", inputs=("da",))],
    )  # fmt: skip
    slot = {n["name"]: n["slot"] for n in pipeline_data.graph(p.Pipeline(spec=crossed))["nodes"]}
    assert slot == {"a": 0, "b": 1, "from_a": 0, "from_b": 1}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (p.StepStatus(state=S.REUSED, run_id="r", changed=[]), None),
        (p.StepStatus(state=S.WAITING), None),
        (p.StepStatus(state=S.SKIPPED, reason="prep failed"), None),
        (
            p.StepStatus(state=S.RUNNING, changed=["script"], ran_because="key changed"),
            "key changed; changed: script",
        ),
        (
            p.StepStatus(state=S.COMPLETED, changed=[], ran_because="allow_reuse is off"),
            "allow_reuse is off; key unchanged",
        ),
        (
            p.StepStatus(state=S.COMPLETED, changed=["image"], ran_because="regenerate_outputs"),
            "regenerate_outputs; changed: image",
        ),
        (p.StepStatus(state=S.FAILED, ran_because="no earlier run"), "no earlier run"),
        (p.StepStatus(state=S.CANCELED), None),
    ],
)
def test_why_a_step_ran_names_the_parts_of_its_key_that_changed(
    status: p.StepStatus, expected: str | None
) -> None:
    assert pipeline_data.why_ran(status) == expected


def test_step_rows_link_the_reused_run_and_say_why_others_ran_failed_or_were_skipped() -> None:
    runs = [
        record("old_prep", RunState.COMPLETED, parent_id="old", step="prep", started_at=1.0),
        record("pl_train", RunState.COMPLETED, parent_id="pl", step="train", started_at=5.0,
               ended_at=9.0),
        record("pl_evaluate", RunState.FAILED, parent_id="pl", step="evaluate",
               error=m.RunError(kind=ErrorKind.EXIT_CODE, message="the script exited with code 1")),
    ]  # fmt: skip
    rows = {r["name"]: r for r in pipeline_data.step_rows(FAILED, runs)}
    assert [r["name"] for r in pipeline_data.step_rows(FAILED, runs)] == [s.name for s in STEPS]
    prep = rows["prep"]
    assert (prep["state"], prep["reused_from"], prep["reused_pipeline"]) == (
        "reused", "old_prep", "old"
    )  # fmt: skip
    assert prep["started_at"] is None and prep["why_ran"] is None  # another run's times
    train = rows["train"]
    assert train["reused_from"] is None and train["run_state"] == "Completed"
    assert train["changed"] == ["script", "inputs.prepped"]
    assert train["why_ran"] == "key changed; changed: script, inputs.prepped"
    assert (train["target"], train["inputs"], train["outputs"]) == ("gpu", ["prepped"], ["model"])
    assert (train["started_at"], train["ended_at"], train["layer"]) == (5.0, 9.0, 1)
    evaluate = rows["evaluate"]
    assert evaluate["reason"] == "exit code 1"
    assert evaluate["error"] == "the script exited with code 1"
    assert rows["report"]["reason"] == "evaluate failed" and rows["report"]["run_id"] is None
    assert rows["report"]["run_after"] == ["lint"]
    assert rows["lint"]["allow_reuse"] is False and rows["lint"]["run_state"] is None  # unread
    assert pipeline_data.run_ids(FAILED) == ["old_prep", "pl_train", "pl_evaluate", "pl_lint"]


def test_parameters_say_the_value_used_and_whether_it_was_set() -> None:
    assert pipeline_data.parameters(FAILED) == [
        {"name": "epochs", "value": 5, "default": 3, "set": True},
        {"name": "lr", "value": 0.1, "default": 0.1, "set": False},
    ]


def test_a_step_run_as_it_changes() -> None:
    rec = record("pl_train", RunState.RUNNING, parent_id="pl", step="train", started_at=3.0)
    assert pipeline_data.step_run(rec) == {
        "run_id": "pl_train", "step": "train", "run_state": "Running", "terminal": False,
        "started_at": 3.0, "ended_at": None, "error": None,
    }  # fmt: skip


def dags() -> st.SearchStrategy[p.PipelineSpec]:
    """Random DAGs: step i reads outputs of earlier steps and may run after earlier ones."""

    @st.composite
    def build(draw: st.DrawFn) -> p.PipelineSpec:
        n = draw(st.integers(1, 12))
        steps = []
        for i in range(n):
            earlier = st.sets(st.integers(0, i - 1), max_size=3) if i else st.just(set[int]())
            reads, after = draw(earlier), draw(earlier)
            steps.append(
                step(f"s{i}", inputs=tuple(f"d{j}" for j in sorted(reads)), outputs=(f"d{i}",),
                     after=tuple(f"s{j}" for j in sorted(after)))
            )  # fmt: skip
        order = draw(st.permutations(steps))
        return p.PipelineSpec(name="random", steps=list(order))

    return build()


@given(dags())
def test_every_edge_points_to_a_later_layer_and_no_two_boxes_share_a_place(
    spec_: p.PipelineSpec,
) -> None:
    g = pipeline_data.graph(p.Pipeline(spec=spec_))
    layer = {n["name"]: n["layer"] for n in g["nodes"]}
    for e in g["edges"]:
        assert layer[e["from"]] < layer[e["to"]]
    places = [(n["layer"], n["slot"]) for n in g["nodes"]]
    assert len(set(places)) == len(places) == len(spec_.steps)
    assert all(0 <= n["slot"] < g["width"] and 0 <= n["layer"] < g["layers"] for n in g["nodes"])
