"""What `sortie pipeline show` and ``wait_for_completion(show_output=True)`` say of a pipeline
run (``client/pipeline_views``), from built records: each step's why (the run it reused, why
it failed or was skipped, why it ran and which key parts changed), and the progress lines
printed while following a run (a line when a step's line changes, none while it waits, then
the pipeline's end)."""

from __future__ import annotations

from sortie.client.pipeline_views import StepProgress, pipeline_view, step_views, step_why
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import RunState
from tests.builders import record, spec

PIPE = "exp_1_aaaa"
NAMES = ("prep", "train", "evaluate", "report")


def pipeline(**statuses: p.StepStatus) -> p.Pipeline:
    steps = [p.StepSpec(name=n, run=spec(script=f"{n}.py", target="box")) for n in NAMES]
    return p.Pipeline(
        spec=p.PipelineSpec(name="etl", steps=steps),
        steps={n: statuses.get(n, p.StepStatus()) for n in NAMES},
    )


def pipeline_record(state: RunState = RunState.RUNNING, **statuses: p.StepStatus) -> m.RunRecord:
    return record(PIPE, state, pipeline=pipeline(**statuses))


def sid(name: str) -> str:
    return p.step_run_id(PIPE, name)


def test_each_step_says_why_it_is_where_it_is() -> None:
    pipe = pipeline(
        prep=p.StepStatus(
            state=p.StepState.REUSED, run_id="exp_0_old_prep", changed=[], outputs={"d": "m1"}
        ),
        train=p.StepStatus(
            state=p.StepState.COMPLETED,
            run_id=sid("train"),
            changed=["arguments", "env", "inputs.d"],
            ran_because="key changed",
        ),
        evaluate=p.StepStatus(
            state=p.StepState.FAILED, run_id=sid("evaluate"), reason="its run failed: exit 1"
        ),
        report=p.StepStatus(state=p.StepState.SKIPPED, reason="evaluate failed"),
    )
    runs = [
        record(sid("train"), RunState.COMPLETED),
        record(sid("evaluate"), RunState.FAILED),
        record("exp_0_old_prep", RunState.COMPLETED),
    ]
    views = {v.name: v for v in step_views(pipe, runs)}
    assert list(views) == list(NAMES)
    assert step_why(views["prep"]) == "reused exp_0_old_prep"
    assert (views["prep"].reused_from, views["prep"].run_state) == ("exp_0_old_prep", None)
    assert views["prep"].data == {"d": "m1"}
    assert step_why(views["train"]) == "ran: key changed (arguments, env, inputs.d)"
    assert views["train"].run_state is RunState.COMPLETED
    assert step_why(views["evaluate"]) == "its run failed: exit 1"
    assert step_why(views["report"]) == "evaluate failed"
    assert views["report"].run_id is None and views["report"].run_state is None

    shown = pipeline_view(record(PIPE, RunState.FAILED, pipeline=pipe), runs)
    assert shown.steps_by_state == {"completed": 1, "failed": 1, "reused": 1, "skipped": 1}


def test_a_step_that_ran_for_the_first_time_or_waits() -> None:
    pipe = pipeline(
        prep=p.StepStatus(
            state=p.StepState.RUNNING, run_id=sid("prep"), ran_because="no earlier run"
        )
    )
    views = {v.name: v for v in step_views(pipe, [])}
    assert step_why(views["prep"]) == "ran: no earlier run"
    assert views["prep"].run_state is None  # its run not among those read
    assert step_why(views["train"]) == ""


def test_progress_prints_a_line_when_a_step_changes_then_the_end() -> None:
    progress = StepProgress()
    running = p.StepStatus(
        state=p.StepState.RUNNING, run_id=sid("prep"), ran_because="no earlier run"
    )
    assert progress.lines(pipeline_record(prep=running)) == [
        f"pipeline {PIPE}: prep: running {sid('prep')}: ran: no earlier run"
    ]
    assert progress.lines(pipeline_record(prep=running)) == []  # nothing changed
    done = p.StepStatus(
        state=p.StepState.COMPLETED, run_id=sid("prep"), ran_because="no earlier run"
    )
    reused = p.StepStatus(state=p.StepState.REUSED, run_id="exp_0_old_train", changed=[])
    failed = p.StepStatus(
        state=p.StepState.FAILED, run_id=sid("evaluate"), reason="its run failed: exit 1"
    )
    skipped = p.StepStatus(state=p.StepState.SKIPPED, reason="evaluate failed")
    assert progress.lines(pipeline_record(prep=done, train=reused)) == [
        f"pipeline {PIPE}: prep: completed {sid('prep')}: ran: no earlier run",
        f"pipeline {PIPE}: train: reused: reused exp_0_old_train",
    ]
    end = pipeline_record(RunState.FAILED, prep=done, train=reused, evaluate=failed, report=skipped)
    assert progress.lines(end) == [
        f"pipeline {PIPE}: evaluate: failed {sid('evaluate')}: its run failed: exit 1",
        f"pipeline {PIPE}: report: skipped: evaluate failed",
        f"pipeline {PIPE}: Failed",
    ]
    assert progress.lines(record("plain", RunState.RUNNING)) == []  # not a pipeline run
