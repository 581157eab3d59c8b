"""Tags, properties and child runs from a script's notes and from clients (scheduler core)."""

from __future__ import annotations

import pytest

from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import notes as n
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.events import read_report
from sortie.scheduler.model import SchedulerState
from tests.builders import heartbeat
from tests.scheduler.test_core import CFG, replies, report, started, submit


def running(run_id: str = "r1") -> SchedulerState:
    s = started()
    submit(s, run_id, 1.0, tags={"team": "vision"})
    core.decide(s, 1.0, CFG)
    for st in (RunState.PREPARING, RunState.STARTING, RunState.RUNNING):
        report(s, run_id, st, 2.0)
    assert s.runs[run_id].state is RunState.RUNNING
    return s


def note(
    s: SchedulerState,
    body: n.ScriptNote,
    *,
    run_id: str = "r1",
    agent: str = "a1",
    attempt: int = 1,
    now: float = 3.0,
) -> list[core.Command]:
    wrapped = n.RunNote(
        agent_id=agent, incarnation="i1", run_id=run_id, attempt=attempt, at=now, seq=1, note=body
    )
    return core.handle(s, core.NoteSeen(note=wrapped), now, CFG)


def refused(cmds: list[core.Command]) -> list[str]:
    return [
        str(c.fields["why"])
        for c in cmds
        if isinstance(c, core.Log) and c.event == "run note refused"
    ]


def test_submit_tags_then_script_tags_and_properties() -> None:
    s = running()
    assert s.runs["r1"].tags == {"team": "vision"}
    assert refused(note(s, n.TagsSet(tags={"lr": "0.1", "team": "nlp"}))) == []
    assert refused(note(s, n.PropertiesAdded(properties={"owner": "ann"}))) == []
    # a property once set keeps its value
    note(s, n.PropertiesAdded(properties={"owner": "bob", "seed": "7"}))
    rec = s.runs["r1"]
    assert rec.tags == {"team": "nlp", "lr": "0.1"}
    assert rec.properties == {"owner": "ann", "seed": "7"}


@pytest.mark.parametrize(
    ("agent", "attempt", "why"),
    [
        ("a2", 1, "the agent does not hold the run's current attempt"),
        ("a1", 2, "the agent does not hold the run's current attempt"),
    ],
)
def test_a_note_from_an_agent_not_holding_the_attempt_changes_nothing(
    agent: str, attempt: int, why: str
) -> None:
    s = running()
    before = s.runs["r1"]
    cmds = note(s, n.TagsSet(tags={"x": "1"}), agent=agent, attempt=attempt)
    assert refused(cmds) == [why]
    assert s.runs["r1"] == before


def test_a_note_for_a_run_that_is_not_running_is_refused() -> None:
    s = started()
    submit(s, "q1", 1.0)
    assert refused(note(s, n.TagsSet(tags={"x": "1"}), run_id="q1")) == ["the run is not running"]
    assert refused(note(s, n.TagsSet(tags={"x": "1"}), run_id="nope")) == ["the run is not running"]


def test_children_start_log_tags_and_end() -> None:
    s = running()
    note(s, n.ChildStarted(id="r1_1", name="fold-1"))
    note(s, n.ChildStarted(id="r1_2"))
    note(s, n.ChildStarted(id="r1_1", name="again"))  # redelivered: nothing new
    child = s.runs["r1_1"]
    assert child.parent_id == "r1" and child.state is RunState.RUNNING
    assert child.properties == {"name": "fold-1"}
    assert child.spec.experiment == "exp" and child.spec.submission_id is None
    assert refused(note(s, n.TagsSet(run="r1_1", tags={"fold": "1"}))) == []
    assert s.runs["r1_1"].tags == {"fold": "1"}
    note(s, n.ChildEnded(run="r1_1", state="Completed"))
    note(s, n.ChildEnded(run="r1_2", state="Failed", error="diverged"))
    assert s.runs["r1_1"].state is RunState.COMPLETED
    failed = s.runs["r1_2"]
    assert failed.state is RunState.FAILED
    assert failed.error is not None and failed.error.message == "diverged"
    # an ended child stays as it ended
    note(s, n.ChildEnded(run="r1_1", state="Failed"))
    assert s.runs["r1_1"].state is RunState.COMPLETED


def test_a_child_id_must_extend_its_parents() -> None:
    s = running()
    cmds = note(s, n.ChildStarted(id="other_1"))
    assert "other_1" not in s.runs
    assert [c.fields["why"] for c in cmds if isinstance(c, core.Log)] == [
        "child id 'other_1' must be r1_<suffix>"
    ]
    note(s, n.ChildStarted(id="r1_1"))
    # a note naming a run that is not its child (here: another running run) is refused
    s2 = running("r2")
    assert refused(note(s2, n.TagsSet(run="r1_1", tags={"x": "y"}), run_id="r2")) == [
        "run 'r1_1' is not a child of r2"
    ]


def test_running_children_end_with_their_parent_and_are_never_reconciled() -> None:
    s = running()
    note(s, n.ChildStarted(id="r1_1"))
    note(s, n.ChildStarted(id="r1_2"))
    note(s, n.ChildEnded(run="r1_2", state="Failed"))
    # the child has no agent of its own: reconciliation neither requeues nor fails it
    hb = heartbeat(cpus=2, running=[("r1", 1)], at=100.0)
    core.handle(s, core.HeartbeatSeen(heartbeat=hb), 100.0, CFG)
    core.decide(s, 100.0, CFG)
    assert s.runs["r1_1"].state is RunState.RUNNING
    report(s, "r1", RunState.FINALIZING, 5.0)
    report(s, "r1", RunState.COMPLETED, 6.0)
    assert s.runs["r1"].state is RunState.COMPLETED
    assert s.runs["r1_1"].state is RunState.COMPLETED
    assert s.runs["r1_1"].history[-1].reason == "parent Completed"
    assert s.runs["r1_2"].state is RunState.FAILED
    assert "r1" not in s.children


def test_a_client_tags_a_running_run_and_cannot_change_a_property() -> None:
    s = running()
    note(s, n.PropertiesAdded(properties={"owner": "ann"}))
    ask = n.RunTagRequest(run_id="r1", tags={"best": "yes"}, properties={"seed": "1"})
    (reply,) = replies(core.handle(s, core.TagAsked(request=ask, reply_to="x"), 4.0, CFG))
    assert isinstance(reply, n.RunTagged)
    assert reply.record.tags == {"team": "vision", "best": "yes"}
    assert s.runs["r1"].properties == {"owner": "ann", "seed": "1"}
    clash = n.RunTagRequest(run_id="r1", properties={"owner": "bob"})
    (reply,) = replies(core.handle(s, core.TagAsked(request=clash, reply_to="x"), 4.0, CFG))
    assert reply == m.ErrorReply(
        code="bad_request",
        message="run r1 already has properties owner with other values; a property cannot "
        "be changed once set (use a tag for a value that changes)",
    )
    bad = n.RunTagRequest(run_id="r1", tags={"": "x"})
    (reply,) = replies(core.handle(s, core.TagAsked(request=bad, reply_to="x"), 4.0, CFG))
    assert isinstance(reply, m.ErrorReply) and "tag key '' must be a string" in reply.message


def test_submit_refuses_bad_tags() -> None:
    s = started()
    (reply,) = replies(submit(s, "r1", 1.0, tags={"k": "v" * 2000}))
    assert reply == m.ErrorReply(
        code="bad_request",
        message="tag 'k': the value must be a string of at most 1024 characters",
    )


def test_notes_and_reports_share_the_agents_report_subject() -> None:
    wrapped = n.RunNote(
        agent_id="a1",
        incarnation="i1",
        run_id="r1",
        attempt=1,
        at=1.0,
        seq=1,
        note=n.TagsSet(tags={"a": "b"}),
    )
    assert read_report(subjects.report("a1"), codec.encode(wrapped)) == wrapped
    assert read_report(subjects.report("a2"), codec.encode(wrapped)) == (
        "report from 'a1' on sortie.report.a2"
    )


def test_children_of_an_attempt_that_goes_back_to_the_queue_fail() -> None:
    s = running()
    note(s, n.ChildStarted(id="r1_1"))
    core.decide(s, 100.0, CFG)  # the agent went silent: the parent is requeued
    assert s.runs["r1"].state is RunState.QUEUED
    assert s.runs["r1_1"].state is RunState.FAILED
    assert s.runs["r1_1"].history[-1].reason == "parent Queued"
