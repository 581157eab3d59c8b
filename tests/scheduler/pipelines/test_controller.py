"""``pipeline_step`` as tables and short simulated pipelines: what is submitted and when,
reuse (all, some, none), failure and skips, cancel, restart safety, determinism."""

from __future__ import annotations

import msgspec
import pytest

from sortie.proto.pipelines import (
    CachedStep,
    ImageLookup,
    LastKey,
    ParamValue,
    PipelineSpec,
    StepState,
    StepStatus,
    cache_id,
    data_token,
    last_key_id,
    param_token,
    step_run_id,
)
from sortie.proto.states import RunState
from sortie.scheduler.pipelines.controller import StepRunView, pipeline_step
from tests.scheduler.pipelines.builders import (
    EXPERIMENT,
    PIPE_RUN,
    Outcome,
    SimPipeline,
    content,
    pipeline,
    step,
    view,
)

W, RUN, C, REU, F, X, S = (
    StepState.WAITING,
    StepState.RUNNING,
    StepState.COMPLETED,
    StepState.REUSED,
    StepState.FAILED,
    StepState.CANCELED,
    StepState.SKIPPED,
)

LINEAR = pipeline(step("prep", [], ["a"]), step("train", ["a"], ["b"]), step("eval", ["b"]))
DIAMOND = pipeline(
    step("a", [], ["x"]), step("b", ["x"], ["y"]), step("c", ["x"], ["z"]), step("d", ["y", "z"])
)
FAN = pipeline(
    step("prep", [], ["p"]),
    *(step(f"w{i}", ["p"], [f"o{i}"]) for i in range(4)),
    step("join", [f"o{i}" for i in range(4)]),
)


def _submitted_per_call(sim: SimPipeline) -> list[list[str]]:
    return [[s.name for s in plan.submit] for plan in sim.plans]


# (what, spec, the steps submitted at each call when every run completes between calls)
WAVES = [
    ("linear", LINEAR, [["prep"], ["train"], ["eval"], []]),
    ("diamond", DIAMOND, [["a"], ["b", "c"], ["d"], []]),
    ("fan-out", FAN, [["prep"], ["w0", "w1", "w2", "w3"], ["join"], []]),
    (
        "independent steps at once",
        pipeline(step("a"), step("b"), step("c", run_after=["a"])),
        [["a", "b"], ["c"], []],
    ),
]


@pytest.mark.parametrize(("spec", "waves"), [c[1:] for c in WAVES], ids=[c[0] for c in WAVES])
def test_waves(spec: PipelineSpec, waves: list[list[str]]) -> None:
    sim = SimPipeline(spec)
    plan = sim.run()
    assert _submitted_per_call(sim) == waves
    assert plan.done is RunState.COMPLETED
    assert plan.reason is None
    assert set(sim.states().values()) == {C}


def test_first_call_submits_the_first_step_as_a_child_run() -> None:
    spec = pipeline(
        step("prep", [], ["a"], arguments=["--rows", param_token("rows"), data_token("a")]),
        step("train", ["a"]),
        parameters={"rows": 10},
    )
    plan = pipeline_step(view(spec, values={"rows": 7}), {}, {}, {})
    [sub] = plan.submit
    run_id = step_run_id(PIPE_RUN, "prep")
    assert (sub.name, sub.run_id) == ("prep", run_id)
    assert sub.spec.arguments == ["--rows", "7", data_token("a")]
    assert sub.spec.data_inputs == {}
    assert sub.spec.data_outputs == ["a"]
    assert (sub.spec.experiment, sub.spec.tags, sub.spec.submission_id) == (
        EXPERIMENT,
        {"team": "ml"},
        None,
    )
    assert sub.key.arguments == ["--rows", "7", data_token("a")]
    assert plan.statuses == {
        "prep": StepStatus(
            state=RUN, run_id=run_id, key=sub.key, changed=None, ran_because="no earlier run"
        )
    }
    assert plan.cache == {
        last_key_id(EXPERIMENT, "pipe", "prep"): LastKey(run_id=run_id, key=sub.key)
    }
    assert plan.done is None


def test_inputs_come_from_the_producers_and_completion_fills_the_cache() -> None:
    sim = SimPipeline(LINEAR)
    sim.run()
    by_name = {s.name: s for s in sim.submitted}
    prep_key = sim.statuses["prep"].key
    assert by_name["train"].spec.data_inputs == {"a": content(prep_key, "a")}
    assert by_name["train"].key.inputs == {"a": content(prep_key, "a")}
    for name in ("prep", "train", "eval"):
        status = sim.statuses[name]
        assert status.key is not None
        entry = sim.cache[cache_id(status.key)]
        assert isinstance(entry, CachedStep)
        assert entry.run_id == step_run_id(PIPE_RUN, name)
        assert entry.outputs == status.outputs
        assert entry.completed_at > 0


def _again(
    first: SimPipeline,
    spec: PipelineSpec | None = None,
    *,
    values: dict[str, ParamValue] | None = None,
    regenerate: bool = False,
) -> SimPipeline:
    """The same pipeline submitted again (a new pipeline run), with the first's cache."""
    return SimPipeline(
        spec or first.spec,
        cache=dict(first.cache),
        run_id="pr2",
        values=values or {},
        regenerate=regenerate,
    )


def test_second_submit_reuses_every_step_in_one_call() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    second = _again(first)
    plan = second.step()
    assert plan.submit == []
    assert plan.done is RunState.COMPLETED
    for name in ("prep", "train", "eval"):
        status = plan.statuses[name]
        assert status.state is REU
        assert status.run_id == step_run_id(PIPE_RUN, name)  # the first pipeline's run
        assert status.changed == []
        assert status.outputs == first.statuses[name].outputs
    assert plan.cache == {}


def test_a_changed_snapshot_reruns_that_step_and_its_downstream() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    edited = pipeline(
        step("prep", [], ["a"]),
        step("train", ["a"], ["b"], snapshot="snap-v2"),
        step("eval", ["b"]),
    )
    second = _again(first, edited)
    second.run()
    assert second.states() == {"prep": REU, "train": C, "eval": C}
    assert [s.name for s in second.submitted] == ["train", "eval"]
    train, ev = second.statuses["train"], second.statuses["eval"]
    assert train.changed == ["snapshot_id"]
    assert train.ran_because == "key changed: snapshot_id"
    assert ev.changed == ["inputs.b"]
    assert ev.ran_because == "key changed: inputs.b"


def test_a_changed_parameter_reruns_the_steps_that_use_it() -> None:
    spec = pipeline(
        step("prep", [], ["a"]),
        step(
            "train", ["a"], ["b"], arguments=[data_token("a"), data_token("b"), param_token("lr")]
        ),
        step("eval", ["b"]),
        parameters={"lr": 0.1},
    )
    first = SimPipeline(spec)
    first.run()
    second = _again(first, values={"lr": 0.5})
    second.run()
    assert second.states() == {"prep": REU, "train": C, "eval": C}
    assert second.statuses["train"].changed == ["arguments"]
    assert second.submitted[0].spec.arguments[-1] == "0.5"


def test_failure_skips_downstream_and_an_independent_branch_finishes() -> None:
    spec = pipeline(
        step("a", [], ["x"]),
        step("b", ["x"], ["y"]),
        step("c", ["y"], ["z"]),
        step("d", ["z"]),
        step("other", [], ["o"]),
        step("other2", ["o"]),
    )
    sim = SimPipeline(spec, outcome=lambda n: "failed" if n == "b" else "completed")
    plan = sim.run()
    assert sim.states() == {"a": C, "b": F, "c": S, "d": S, "other": C, "other2": C}
    assert sim.statuses["b"].reason == "its run failed: exit code 1"
    assert sim.statuses["c"].reason == "not run: upstream step 'b' failed"
    assert sim.statuses["d"].reason == "not run: upstream step 'b' failed"
    assert plan.done is RunState.FAILED
    assert plan.reason == "failed: step 'b'; 2 skipped"
    assert "c" not in {s.name for s in sim.submitted}


def test_a_skip_names_every_failed_and_canceled_step_above() -> None:
    outcomes: dict[str, Outcome] = {"b": "failed", "c": "canceled"}
    sim = SimPipeline(DIAMOND, outcome=lambda n: outcomes.get(n, "completed"))
    plan = sim.run()
    assert sim.statuses["d"].reason == "not run: upstream step 'b' failed, 'c' was canceled"
    assert plan.reason == "failed: step 'b'; canceled: step 'c'; 1 skipped"


def test_a_missing_output_fails_the_step() -> None:
    sim = SimPipeline(LINEAR, outcome=lambda n: "no-output" if n == "prep" else "completed")
    plan = sim.run()
    assert sim.states() == {"prep": F, "train": S, "eval": S}
    assert sim.statuses["prep"].reason == "its run completed but did not store output 'a'"
    assert plan.done is RunState.FAILED
    assert not any(isinstance(v, CachedStep) for v in sim.cache.values())


def test_cancel_cancels_waiting_steps_and_ends_when_the_running_ones_end() -> None:
    sim = SimPipeline(FAN)
    sim.step()  # prep submitted
    sim.finish(["prep"])
    sim.step()  # the workers submitted
    sim.finish(["w0"])
    sim.cancel = True
    plan = sim.step()
    assert plan.submit == []
    assert sim.states() == {"prep": C, "w0": C, "w1": RUN, "w2": RUN, "w3": RUN, "join": X}
    assert sim.statuses["join"].reason == "the pipeline was canceled"
    assert plan.done is None  # the caller cancels the running steps' runs
    sim.outcome = lambda _n: "canceled"
    sim.finish(["w1", "w2", "w3"])
    plan = sim.step()
    assert plan.done is RunState.CANCELED
    assert plan.reason == "the pipeline was canceled"
    assert sim.states()["w1"] is X


def test_regenerate_outputs_runs_everything() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    second = _again(first, regenerate=True)
    second.run()
    assert [s.name for s in second.submitted] == ["prep", "train", "eval"]
    for name in ("prep", "train", "eval"):
        assert second.statuses[name].ran_because == "regenerate_outputs"
        assert second.statuses[name].changed == []


def test_allow_reuse_off_reruns_that_step_only_when_its_outputs_are_the_same() -> None:
    spec = pipeline(
        step("prep", [], ["a"]), step("train", ["a"], ["b"], allow_reuse=False), step("eval", ["b"])
    )
    first = SimPipeline(spec)
    first.run()
    second = _again(first)
    second.run()
    # train ran again and stored the same content (the simulation is deterministic): eval's
    # key is unchanged, so eval is reused
    assert second.states() == {"prep": REU, "train": C, "eval": REU}
    assert second.statuses["train"].ran_because == "allow_reuse is off"


def test_rerun_after_a_failure_resumes() -> None:
    first = SimPipeline(LINEAR, outcome=lambda n: "failed" if n == "train" else "completed")
    first.run()
    second = _again(first)
    plan = second.run()
    assert plan.done is RunState.COMPLETED
    assert second.states() == {"prep": REU, "train": C, "eval": C}
    assert second.statuses["train"].changed == []
    assert second.statuses["train"].ran_because == "no earlier run with this key completed"
    assert second.statuses["eval"].ran_because == "no earlier run"


def test_a_cached_entry_without_an_output_is_not_reused() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    key = first.statuses["prep"].key
    assert key is not None
    cache = dict(first.cache)
    cache[cache_id(key)] = CachedStep(run_id="old", outputs={}, completed_at=1.0)
    second = SimPipeline(LINEAR, cache=cache, run_id="pr2")
    second.step()
    assert second.states()["prep"] is RUN
    assert second.statuses["prep"].ran_because == "the earlier run with this key has no output 'a'"


def test_a_running_step_is_never_submitted_again_and_calls_are_deterministic() -> None:
    sim = SimPipeline(DIAMOND)
    sim.step()
    sim.finish(["a"])
    current, runs = sim.current(), dict(sim.runs)
    plan = pipeline_step(current, runs, {}, {})
    assert plan == pipeline_step(current, runs, {}, {})
    assert [s.name for s in plan.submit] == ["b", "c"]
    sim.step()
    again = sim.step()  # nothing ended since: nothing changes
    assert again.submit == [] and again.statuses == {}


def test_a_step_whose_run_exists_is_adopted_not_submitted() -> None:
    """After a restart between writing a step's run and the pipeline's record: the record
    says WAITING, the run exists; the step goes RUNNING (and on, if its run ended)."""
    sim = SimPipeline(LINEAR)
    sim.step()
    sim.finish(["prep"])
    sim.step()  # train submitted
    sim.statuses["train"] = StepStatus()  # the record was not written
    plan = pipeline_step(sim.current(), dict(sim.runs), {}, {})
    assert plan.submit == []
    assert plan.statuses["train"].state is RUN
    sim.finish(["train"])  # its run ended too, and the record still says WAITING
    plan = pipeline_step(sim.current(), dict(sim.runs), {}, {})
    assert (plan.statuses["train"].state, plan.statuses["eval"].state) == (C, RUN)
    assert [s.name for s in plan.submit] == ["eval"]


def test_a_running_step_without_its_run_is_taken_as_running() -> None:
    spec = LINEAR
    statuses = {"prep": StepStatus(state=RUN, run_id=step_run_id(PIPE_RUN, "prep"))}
    plan = pipeline_step(view(spec, statuses), {}, {}, {})
    assert plan.submit == [] and plan.statuses == {} and plan.done is None


def test_a_run_not_ended_changes_nothing() -> None:
    statuses = {"prep": StepStatus(state=RUN, run_id="r")}
    runs = {"prep": StepRunView(run_id="r", state=RunState.RUNNING, data_outputs={})}
    plan = pipeline_step(view(LINEAR, statuses), runs, {}, {})
    assert plan.statuses == {} and plan.done is None


def test_last_key_is_from_this_experiment_and_pipeline() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    renamed = msgspec.structs.replace(LINEAR, name="other")
    second = _again(first, renamed)
    # the step cache is by key: the other pipeline reuses the same steps
    assert second.run().done is RunState.COMPLETED
    assert set(second.states().values()) == {REU}


def test_on_cancel_a_step_whose_run_exists_is_adopted_so_its_run_gets_canceled() -> None:
    sim = SimPipeline(LINEAR)
    sim.step()
    sim.finish(["prep"])
    sim.step()  # train submitted
    sim.statuses["train"] = StepStatus()  # the record was not written
    sim.cancel = True
    plan = sim.step()
    assert plan.submit == []
    assert (sim.states()["train"], sim.states()["eval"]) == (RUN, X)
    assert sim.statuses["train"].run_id == step_run_id(PIPE_RUN, "train")
    assert plan.done is None


def test_an_adopted_step_is_not_reused_even_if_its_key_is_cached() -> None:
    first = SimPipeline(LINEAR)
    first.run()
    second = _again(first)
    prep = step_run_id("pr2", "prep")
    runs = {"prep": StepRunView(run_id=prep, state=RunState.QUEUED, data_outputs={})}
    cached = {k: v for k, v in second.cache.items() if isinstance(v, CachedStep)}
    plan = pipeline_step(second.current(), runs, cached, {})
    assert plan.submit == []
    assert plan.statuses["prep"].state is RUN
    assert plan.statuses["prep"].run_id == prep
    assert plan.statuses["prep"].ran_because == "it was submitted before the scheduler restarted"


# --- a container step's image: reuse follows the image ID under a tag --------------------

TAGGED = pipeline(step("prep", [], ["a"], image="trainer:latest"), step("train", ["a"]))
PINNED_REF = "trainer@sha256:" + "a" * 64
NOT_ANSWERED = "no agent of target 'default' answered"

# (what, the first submit's lookup, the second's (None: no lookup made), the prep step's
# state at the second submit, its changed parts, why it ran, train's state)
IMAGE_CASES: list[tuple[str, ImageLookup | None, ImageLookup | None, StepState, list[str] | None, str | None, StepState]] = [  # noqa: E501
    (
        "same ID under the tag: reused",
        ImageLookup(image_id="sha256:1"),
        ImageLookup(image_id="sha256:1"),
        REU, [], None, REU,
    ),
    (
        "the tag re-pointed to another image: runs, image changed",
        ImageLookup(image_id="sha256:1"),
        ImageLookup(image_id="sha256:2"),
        C, ["image"], "key changed: image", C,
    ),
    (
        "no agent answered now: runs, and says why",
        ImageLookup(image_id="sha256:1"),
        ImageLookup(problem=NOT_ANSWERED),
        C, ["image"],
        f"the image ID of 'trainer:latest' could not be resolved: {NOT_ANSWERED}",
        C,
    ),
    (
        "never looked up (a pipeline accepted before lookups): runs",
        ImageLookup(image_id="sha256:1"),
        None,
        C, ["image"],
        "the image ID of 'trainer:latest' could not be resolved: it was not looked up",
        C,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_reuse_follows_the_image_id_under_a_tag(
    case: tuple[
        ImageLookup, ImageLookup | None, StepState, list[str] | None, str | None, StepState
    ],
) -> None:
    first, second, state, diff, because, downstream = case
    one = SimPipeline(TAGGED, images={"prep": first})
    one.run()
    assert one.statuses["prep"].key is not None
    assert one.statuses["prep"].key.image_id == first.image_id
    two = SimPipeline(
        TAGGED,
        cache=dict(one.cache),
        run_id="pr2",
        images={} if second is None else {"prep": second},
    )
    two.run()
    prep = two.statuses["prep"]
    assert (prep.state, prep.changed, prep.ran_because) == (state, diff, because)
    # the same content from the same key: downstream reruns only if the image changed it
    assert two.statuses["train"].state is downstream


def test_an_unresolved_image_is_never_reused_even_with_the_same_problem() -> None:
    """Both submits without an ID: equal keys, yet the second runs (the tag may name another
    image now)."""
    unknown = {"prep": ImageLookup(problem=NOT_ANSWERED)}
    one = SimPipeline(TAGGED, images=unknown)
    one.run()
    two = SimPipeline(TAGGED, cache=dict(one.cache), run_id="pr2", images=unknown)
    two.run()
    assert two.states()["prep"] is C
    assert two.statuses["prep"].changed == []
    assert two.statuses["prep"].ran_because is not None
    assert "could not be resolved" in two.statuses["prep"].ran_because


def test_an_image_pinned_by_digest_needs_no_lookup() -> None:
    spec = pipeline(step("prep", [], ["a"], image=PINNED_REF))
    one = SimPipeline(spec)
    one.run()
    two = SimPipeline(spec, cache=dict(one.cache), run_id="pr2")
    two.run()
    assert two.states() == {"prep": REU}
    assert two.statuses["prep"].key is not None
    assert two.statuses["prep"].key.image_id is None


# (what, the first submit's lookup, the image its run reports, the second submit's lookup,
# the step's state at the second submit)
RAN_CASES = [
    ("unresolved, then resolved to what ran: reused", None, "sha256:1", "sha256:1", REU),
    ("unresolved, then another image: runs", None, "sha256:1", "sha256:2", C),
    ("the tag moved before the run: keyed on what ran", "sha256:0", "sha256:1", "sha256:1", REU),
    ("the tag moved before the run, back again: runs", "sha256:0", "sha256:1", "sha256:0", C),
]


@pytest.mark.parametrize("case", [c[1:] for c in RAN_CASES], ids=[c[0] for c in RAN_CASES])
def test_a_completed_step_is_cached_under_the_image_its_run_reports(
    case: tuple[str | None, str, str, StepState],
) -> None:
    looked_up, ran, later, state = case
    first = (
        ImageLookup(problem=NOT_ANSWERED) if looked_up is None else ImageLookup(image_id=looked_up)
    )
    one = SimPipeline(TAGGED, images={"prep": first}, ran_images={"prep": ran})
    one.run()
    assert one.statuses["prep"].key is not None
    assert one.statuses["prep"].key.image_id == ran  # the record says what ran
    two = SimPipeline(
        TAGGED, cache=dict(one.cache), run_id="pr2", images={"prep": ImageLookup(image_id=later)}
    )
    two.run()
    prep = two.statuses["prep"]
    assert prep.state is state
    assert prep.changed == ([] if state is REU else ["image"])


def test_a_pinned_image_keeps_its_key_whatever_its_run_reports() -> None:
    spec = pipeline(step("prep", [], ["a"], image=PINNED_REF))
    one = SimPipeline(spec, ran_images={"prep": "sha256:1"})
    one.run()
    assert one.statuses["prep"].key is not None
    assert one.statuses["prep"].key.image_id is None
