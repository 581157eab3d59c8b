"""Pipelines in the scheduler's core (``scheduler/pipeline_runs.py``) with the real
controller: admission (a cycle refused, nothing stored), steps placed in the pass that
submits them, data between steps, reuse, a failure's downstream skipped, a user's cancel, and
a restart rebuilt from the stored records that starts no step twice."""

from __future__ import annotations

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler import core
from sortie.scheduler.metrics import Metrics
from sortie.scheduler.model import SchedulerState, restore, restore_step_cache
from sortie.scheduler.reconcile import Timing
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=1000, assign_ack_s=1000))
PIPE = "exp_1_aaaa"
AGAIN = "exp_2_bbbb"
AGENT_OF = {"box1": "a1", "box2": "a2"}  # target -> its one agent


def steps(**changes: dict[str, object]) -> list[p.StepSpec]:
    """prep (box1) -> dataset -> train (box2) -> model -> evaluate (box1)."""
    d, md = p.data_token("dataset"), p.data_token("model")
    base: dict[str, dict[str, object]] = {
        "prep": {"run": spec(script="prep.py", target="box1", arguments=["--out", d])},
        "train": {
            "run": spec(script="train.py", target="box2", arguments=["--data", d, "--out", md]),
        },
        "evaluate": {"run": spec(script="evaluate.py", target="box1", arguments=["--model", md])},
    }
    io = {
        "prep": {"outputs": ["dataset"]},
        "train": {"inputs": ["dataset"], "outputs": ["model"]},
        "evaluate": {"inputs": ["model"]},
    }
    return [
        p.StepSpec(name=name, **{**kw, **io[name], **changes.get(name, {})})  # type: ignore[arg-type]
        for name, kw in base.items()
    ]


def request(
    step_specs: list[p.StepSpec] | None = None, *, validate_only: bool = False, **kw: object
) -> m.SubmitRequest:
    pipe = p.PipelineSpec(name="etl", steps=step_specs if step_specs is not None else steps())
    return m.SubmitRequest(
        spec=spec(script="etl", submission_id=kw.pop("submission_id", None)),
        pipeline=p.PipelineRequest(spec=pipe, **kw),  # type: ignore[arg-type]
        validate_only=validate_only,
    )


def started() -> SchedulerState:
    s = SchedulerState(started_at=0.0)
    for target, agent in AGENT_OF.items():
        hb = heartbeat(agent, incarnation="i1", target=target)
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), 0.0, CFG)
    return s


def submit(s: SchedulerState, req: m.SubmitRequest, run_id: str = PIPE) -> object:
    cmds = core.handle(s, core.Submitted(request=req, run_id=run_id, reply_to="r"), 1.0, CFG)
    (reply,) = [c.message for c in cmds if isinstance(c, core.Reply)]
    return reply


def assigned(cmds: list[core.Command]) -> list[tuple[str, str]]:
    """(agent, run) of each Assign sent."""
    return [
        (c.agent_id, c.command.run_id)
        for c in cmds
        if isinstance(c, core.SendToAgent) and isinstance(c.command, m.Assign)
    ]


def report(s: SchedulerState, run_id: str, st: RunState, now: float, **kw: object) -> None:
    rec = s.runs[run_id]
    rep = m.RunReport(
        agent_id=rec.agent_id or "",
        incarnation="i1",
        run_id=run_id,
        attempt=rec.attempt,
        state=st,
        at=now,
        **kw,  # type: ignore[arg-type]
    )
    core.handle(s, core.ReportSeen(report=rep), now, CFG)


def finish(s: SchedulerState, run_id: str, now: float, **outputs: str) -> list[core.Command]:
    """A placed step runs to Completed, storing ``outputs``; then a decide pass."""
    for st in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
        report(s, run_id, st, now)
    report(s, run_id, RunState.COMPLETED, now, exit_code=0, data_outputs=outputs)
    return core.decide(s, now, CFG)


def fail(s: SchedulerState, run_id: str, now: float) -> list[core.Command]:
    report(s, run_id, RunState.STARTING, now)
    report(
        s,
        run_id,
        RunState.FAILED,
        now,
        exit_code=1,
        error=m.RunError(kind="exit_code", message="exit code 1"),  # type: ignore[arg-type]
    )
    return core.decide(s, now, CFG)


def states(s: SchedulerState, run_id: str = PIPE) -> dict[str, p.StepState]:
    pipe = s.runs[run_id].pipeline
    assert pipe is not None
    return {n: st.state for n, st in pipe.steps.items()}


def run_all(s: SchedulerState) -> None:
    """The three steps of PIPE run and complete, each storing its output."""
    sid = p.step_run_id
    assert assigned(core.decide(s, 1.0, CFG)) == [("a1", sid(PIPE, "prep"))]
    assert assigned(finish(s, sid(PIPE, "prep"), 2.0, dataset="m-data")) == [
        ("a2", sid(PIPE, "train"))
    ]
    assert assigned(finish(s, sid(PIPE, "train"), 3.0, model="m-model")) == [
        ("a1", sid(PIPE, "evaluate"))
    ]
    finish(s, sid(PIPE, "evaluate"), 4.0)


# --- admission -------------------------------------------------------------------------------


def _cyclic() -> list[p.StepSpec]:
    """prep also reads the model train writes: prep -> train -> prep."""
    first, *rest = steps()
    return [msgspec.structs.replace(first, inputs=["model"]), *rest]


@pytest.mark.parametrize(
    ("step_specs", "words"),
    [
        (_cyclic(), "cycle"),
        (steps(train={"inputs": ["dataset", "nothing"]}), "nothing"),
        ([], "step"),
        (
            steps(train={"run": spec(script="train.py", target="nowhere", arguments=[])}),
            "step train: unknown compute target 'nowhere'",
        ),
    ],
)
def test_a_bad_pipeline_is_refused_and_nothing_is_stored(
    step_specs: list[p.StepSpec], words: str
) -> None:
    s = started()
    for validate_only in (False, True):
        reply = submit(s, request(step_specs, validate_only=validate_only))
        assert isinstance(reply, m.ErrorReply), reply
        assert reply.code in {"bad_request", "unknown_target"}
        assert words in reply.message
    assert assigned(core.decide(s, 2.0, CFG)) == []
    assert not s.runs and not s.pipelines and not s.submissions


def test_a_cycle_is_refused_naming_its_steps() -> None:
    reply = submit(started(), request(_cyclic()))
    assert isinstance(reply, m.ErrorReply)
    assert "prep" in reply.message and "train" in reply.message


def test_validate_only_creates_nothing_and_a_repeated_submission_is_the_same_run() -> None:
    s = started()
    assert isinstance(submit(s, request(validate_only=True)), m.SubmitValid)
    assert not s.runs
    first = submit(s, request(submission_id="sub-1"))
    again = submit(s, request(submission_id="sub-1"), run_id=AGAIN)
    assert first == m.SubmitAccepted(run_id=PIPE)
    assert again == m.SubmitAccepted(run_id=PIPE, created=False)
    assert list(s.runs) == [PIPE]


# --- running -----------------------------------------------------------------------------------


def test_the_first_step_is_placed_in_the_pass_that_accepts_the_pipeline() -> None:
    s = started()
    assert submit(s, request()) == m.SubmitAccepted(run_id=PIPE)
    rec = s.runs[PIPE]
    assert rec.state is RunState.RUNNING and rec.attempt == 1
    assert set(states(s).values()) == {p.StepState.WAITING}
    prep = p.step_run_id(PIPE, "prep")
    assert assigned(core.decide(s, 1.0, CFG)) == [("a1", prep)]
    step = s.runs[prep]
    assert (step.parent_id, step.step, step.state) == (PIPE, "prep", RunState.PREPARING)
    assert step.spec.data_outputs == ["dataset"] and step.spec.submission_id is None
    assert states(s) == {
        "prep": p.StepState.RUNNING,
        "train": p.StepState.WAITING,
        "evaluate": p.StepState.WAITING,
    }


def test_data_flows_each_step_on_its_target_and_the_pipeline_completes() -> None:
    s = started()
    submit(s, request())
    run_all(s)
    train = s.runs[p.step_run_id(PIPE, "train")]
    assert train.spec.data_inputs == {"dataset": "m-data"}
    assert train.data_outputs == {"model": "m-model"}  # RunReport.data_outputs kept
    assert s.runs[p.step_run_id(PIPE, "evaluate")].spec.data_inputs == {"model": "m-model"}
    assert s.runs[PIPE].state is RunState.COMPLETED
    assert set(states(s).values()) == {p.StepState.COMPLETED}
    assert not s.pipelines
    # the cache: a completed step under its key, and each step's last key
    assert len(s.step_cache) == 3 and len(s.last_keys) == 3
    assert {c.run_id for c in s.step_cache.values()} == {
        p.step_run_id(PIPE, n) for n in ("prep", "train", "evaluate")
    }


def test_a_second_submit_reuses_every_step_and_completes_in_one_pass() -> None:
    s = started()
    submit(s, request())
    run_all(s)
    submit(s, request(), run_id=AGAIN)
    assert assigned(core.decide(s, 5.0, CFG)) == []
    rec = s.runs[AGAIN]
    assert rec.state is RunState.COMPLETED
    assert rec.pipeline is not None
    for name, status in rec.pipeline.steps.items():
        assert status.state is p.StepState.REUSED
        assert status.run_id == p.step_run_id(PIPE, name)
        assert status.changed == []
    assert not any(r.startswith(AGAIN + "_") for r in s.runs)  # no step run at all


def test_a_changed_step_runs_again_with_its_downstream_and_says_what_changed() -> None:
    s = started()
    submit(s, request())
    run_all(s)
    train = spec(script="train.py", target="box2", snapshot_id="f" * 64)
    train = msgspec.structs.replace(train, arguments=steps()[1].run.arguments)
    submit(s, request(steps(train={"run": train})), run_id=AGAIN)
    assert assigned(core.decide(s, 5.0, CFG)) == [("a2", p.step_run_id(AGAIN, "train"))]
    pipe = s.runs[AGAIN].pipeline
    assert pipe is not None
    assert pipe.steps["prep"].state is p.StepState.REUSED
    assert pipe.steps["train"].changed == ["snapshot_id"]
    finish(s, p.step_run_id(AGAIN, "train"), 6.0, model="m-model-2")
    pipe = s.runs[AGAIN].pipeline
    assert pipe is not None
    assert pipe.steps["evaluate"].state is p.StepState.RUNNING
    assert pipe.steps["evaluate"].changed == ["inputs.model"]


def test_regenerate_outputs_runs_every_step() -> None:
    s = started()
    submit(s, request())
    run_all(s)
    submit(s, request(regenerate_outputs=True), run_id=AGAIN)
    assert assigned(core.decide(s, 5.0, CFG)) == [("a1", p.step_run_id(AGAIN, "prep"))]


def test_a_failed_step_fails_the_pipeline_and_its_downstream_is_skipped() -> None:
    s = started()
    submit(s, request())
    core.decide(s, 1.0, CFG)
    fail(s, p.step_run_id(PIPE, "prep"), 2.0)
    assert states(s) == {
        "prep": p.StepState.FAILED,
        "train": p.StepState.SKIPPED,
        "evaluate": p.StepState.SKIPPED,
    }
    rec = s.runs[PIPE]
    assert rec.state is RunState.FAILED
    assert rec.error is not None and "prep" in rec.error.message
    assert not any(r.startswith(PIPE + "_t") or r.startswith(PIPE + "_e") for r in s.runs)


def test_a_rerun_reuses_what_completed_and_runs_the_rest() -> None:
    s = started()
    submit(s, request())
    core.decide(s, 1.0, CFG)
    finish(s, p.step_run_id(PIPE, "prep"), 2.0, dataset="m-data")
    fail(s, p.step_run_id(PIPE, "train"), 3.0)
    assert s.runs[PIPE].state is RunState.FAILED
    submit(s, request(rerun_of=PIPE), run_id=AGAIN)
    assert assigned(core.decide(s, 4.0, CFG)) == [("a2", p.step_run_id(AGAIN, "train"))]
    pipe = s.runs[AGAIN].pipeline
    assert pipe is not None and pipe.rerun_of == PIPE
    assert pipe.steps["prep"].state is p.StepState.REUSED


def test_canceling_a_pipeline_cancels_its_running_step_and_starts_none() -> None:
    s = started()
    submit(s, request())
    core.decide(s, 1.0, CFG)
    prep = p.step_run_id(PIPE, "prep")
    cmds = core.handle(s, core.CancelAsked(run_id=PIPE, reply_to="r"), 2.0, CFG)
    cmds += core.decide(s, 2.0, CFG)
    cancels = [
        (c.agent_id, c.command.run_id)
        for c in cmds
        if isinstance(c, core.SendToAgent) and isinstance(c.command, m.Cancel)
    ]
    assert cancels == [("a1", prep)]
    assert s.runs[PIPE].cancel_requested and s.runs[PIPE].state is RunState.RUNNING
    report(s, prep, RunState.CANCELED, 3.0)
    assert assigned(core.decide(s, 3.0, CFG)) == []
    assert s.runs[PIPE].state is RunState.CANCELED
    assert states(s) == {
        "prep": p.StepState.CANCELED,
        "train": p.StepState.CANCELED,
        "evaluate": p.StepState.CANCELED,
    }


def test_the_pipeline_metrics_count_active_pipelines_submitted_and_reused_steps() -> None:
    s = started()
    metrics = Metrics(lambda: s)

    def observed() -> None:  # as the daemon: observe, then the changes are written
        metrics.observe([], s, 0.0)
        s.runs.take_changes()

    submit(s, request())
    core.decide(s, 1.0, CFG)
    observed()
    reg = metrics.registry
    assert reg.get_sample_value("sortie_pipelines_active") == 1
    finish(s, p.step_run_id(PIPE, "prep"), 2.0, dataset="m-data")
    observed()
    finish(s, p.step_run_id(PIPE, "train"), 3.0, model="m-model")
    observed()
    finish(s, p.step_run_id(PIPE, "evaluate"), 4.0)
    observed()
    submit(s, request(), run_id=AGAIN)
    core.decide(s, 5.0, CFG)
    observed()
    submitted = "sortie_pipeline_steps_submitted_total"
    assert reg.get_sample_value(submitted, {"target": "box1"}) == 2
    assert reg.get_sample_value(submitted, {"target": "box2"}) == 1
    assert reg.get_sample_value("sortie_pipeline_steps_reused_total") == 3
    assert reg.get_sample_value("sortie_pipelines_active") == 0


# --- a restart -------------------------------------------------------------------------------


def restarted(records: list[m.RunRecord]) -> SchedulerState:
    s = SchedulerState(started_at=10.0)
    for rec in records:
        restore(s, rec, 10.0)
    core.handle(s, core.Started(children_of=frozenset()), 10.0, CFG)
    for target, agent in AGENT_OF.items():
        hb = heartbeat(agent, incarnation="i1", target=target, running=_held(records, agent))
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), 10.0, CFG)
    return s


def _held(records: list[m.RunRecord], agent: str) -> list[tuple[str, int]]:
    return [
        (r.run_id, r.attempt) for r in records if r.agent_id == agent and r.state not in TERMINAL
    ]


def test_a_step_stored_before_its_pipeline_said_so_is_not_started_twice() -> None:
    s = started()
    submit(s, request())
    core.decide(s, 1.0, CFG)
    prep = p.step_run_id(PIPE, "prep")
    # the crash came between the step run's write and the pipeline's: it says all WAITING
    records = [
        msgspec.structs.replace(
            r,
            pipeline=msgspec.structs.replace(
                r.pipeline, steps={n: p.StepStatus() for n in r.pipeline.steps}
            ),
        )
        if r.pipeline is not None
        else r
        for r in s.runs.values()
    ]
    again = restarted(records)
    assert again.pipelines[PIPE].steps.keys() == {"prep"}
    assert assigned(core.decide(again, 10.0, CFG)) == []  # prep is not started again
    assert states(again)["prep"] is p.StepState.RUNNING
    assert again.runs[PIPE].pipeline.steps["prep"].run_id == prep  # type: ignore[union-attr]
    # and the pipeline goes on from there as it would have
    assert assigned(finish(again, prep, 11.0, dataset="m-data")) == [
        ("a2", p.step_run_id(PIPE, "train"))
    ]


def test_a_restart_after_a_step_ended_goes_on_with_the_next() -> None:
    s = started()
    submit(s, request())
    core.decide(s, 1.0, CFG)
    finish(s, p.step_run_id(PIPE, "prep"), 2.0, dataset="m-data")
    records = list(s.runs.values())  # prep ended (and stored), train Preparing
    again = restarted(records)
    assert assigned(core.decide(again, 10.0, CFG)) == []  # train's Assign is not sent twice
    assert again.pipelines[PIPE].steps.keys() == {"prep", "train"}  # prep, ended, too
    assert sorted(r for r in again.runs if r.startswith(PIPE + "_")) == [
        p.step_run_id(PIPE, "train")
    ]
    assert assigned(finish(again, p.step_run_id(PIPE, "train"), 11.0, model="m-model")) == [
        ("a1", p.step_run_id(PIPE, "evaluate"))
    ]


def test_a_cache_entry_lost_in_a_crash_is_put_back_from_the_pipeline_record() -> None:
    """The runs were stored and the scheduler stopped before the step cache was: on load,
    the completed steps of the stored pipeline give back their entries, and a second submit
    reuses every step as it would have."""
    s = started()
    submit(s, request())
    run_all(s)
    records = list(s.runs.values())
    again = restarted(records)  # the step cache lost: nothing loaded into it
    assert len(again.step_cache) == 0
    put_back = restore_step_cache(again, records)
    assert put_back == sorted(s.step_cache)
    assert dict(again.step_cache.items()) == dict(s.step_cache.items())
    assert again.step_cache.changed == set(put_back)  # marked: the next write stores them
    assert restore_step_cache(again, records) == []  # what is there is kept
    submit(again, request(), run_id=AGAIN)
    assert assigned(core.decide(again, 11.0, CFG)) == []
    assert again.runs[AGAIN].state is RunState.COMPLETED
    assert set(states(again, AGAIN).values()) == {p.StepState.REUSED}


# --- a tagged container image: keyed on the ID the daemon looked up -----------------------------


def test_a_tag_re_pointed_to_another_image_runs_its_step_again() -> None:
    """The IDs the daemon looked up go on the pipeline's record; the same ID under the tag is
    reused, another ID runs the step again and ``changed`` names the image."""
    s = SchedulerState(started_at=0.0)
    for target, agent in AGENT_OF.items():
        hb = heartbeat(agent, incarnation="i1", target=target)
        hb = msgspec.structs.replace(hb, container_engine="podman 4.3.1")
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), 0.0, CFG)
    docker = m.Environment(docker=m.DockerSection(enabled=True, base_image="prep:latest"))
    prep = spec(
        script="prep.py", target="box1", arguments=steps()[0].run.arguments, environment=docker
    )
    specs = steps(prep={"run": prep})

    def submit_with(image_id: str, run_id: str) -> None:
        images = {"prep": p.ImageLookup(image_id=image_id)}
        event = core.Submitted(request=request(specs), run_id=run_id, reply_to="r", images=images)
        core.handle(s, event, 1.0, CFG)

    submit_with("sha256:1", PIPE)
    pipe = s.runs[PIPE].pipeline
    assert pipe is not None
    assert pipe.images == {"prep": p.ImageLookup(image_id="sha256:1")}
    run_all(s)
    assert s.runs[PIPE].state is RunState.COMPLETED

    submit_with("sha256:1", AGAIN)
    assert assigned(core.decide(s, 5.0, CFG)) == []
    assert set(states(s, AGAIN).values()) == {p.StepState.REUSED}

    third = "exp_3_cccc"
    submit_with("sha256:2", third)
    assert assigned(core.decide(s, 6.0, CFG)) == [("a1", p.step_run_id(third, "prep"))]
    pipe = s.runs[third].pipeline
    assert pipe is not None
    assert pipe.steps["prep"].changed == ["image"]
    assert pipe.steps["prep"].ran_because == "key changed: image"
