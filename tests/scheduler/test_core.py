"""The scheduler's decisions, driven with plain events and a hand-held clock."""

import pytest

from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3))


def submit(state: SchedulerState, run_id: str, now: float, **kw: object) -> list[core.Command]:
    req = m.SubmitRequest(spec=spec(**kw))
    return core.handle(state, core.Submitted(request=req, run_id=run_id, reply_to="r"), now, CFG)


def report(
    state: SchedulerState,
    run_id: str,
    st: RunState,
    now: float,
    *,
    attempt: int = 1,
    agent: str = "a1",
    **kw: object,
) -> list[core.Command]:
    rep = m.RunReport(
        agent_id=agent, incarnation="i1", run_id=run_id, attempt=attempt, state=st, at=now, **kw
    )
    return core.handle(state, core.ReportSeen(report=rep), now, CFG)


def sends(cmds: list[core.Command]) -> list[tuple[str, str, str, int]]:
    return [
        (c.agent_id, type(c.command).__name__, c.command.run_id, c.command.attempt)
        for c in cmds
        if isinstance(c, core.SendToAgent)
    ]


def replies(cmds: list[core.Command]) -> list[object]:
    return [c.message for c in cmds if isinstance(c, core.Reply)]


def started() -> SchedulerState:
    s = SchedulerState(started_at=0.0)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 0.0, CFG)
    return s


def test_submit_queues_then_places_on_the_agent() -> None:
    s = started()
    cmds = submit(s, "r1", 1.0)
    assert replies(cmds) == [m.SubmitAccepted(run_id="r1")]
    assert s.runs["r1"].state is RunState.QUEUED and "r1" in s.runs.changed
    cmds = core.decide(s, 1.0, CFG)
    assert sends(cmds) == [("a1", "Assign", "r1", 1)]
    rec = s.runs["r1"]
    assert (rec.state, rec.agent_id, rec.agent_incarnation) == (RunState.PREPARING, "a1", "i1")


def test_runs_placed_alike_share_their_gang_writers_and_state_change() -> None:
    s = started()
    submit(s, "r1", 1.0, resources=m.Resources(cpus=1))
    submit(s, "r2", 1.0, resources=m.Resources(cpus=1))
    core.decide(s, 1.0, CFG)
    a, b = s.runs["r1"], s.runs["r2"]
    assert a.gang == [
        m.GangMember(rank=0, agent_id="a1", incarnation="i1", hostname=a.gang[0].hostname)
    ]
    assert a.writers == [m.Writer(attempt=1, rank=0, agent_id="a1")]
    assert a.history[-1] == m.StateChange(state=RunState.PREPARING, at=1.0, attempt=1)
    assert a.gang is b.gang and a.writers is b.writers and a.history[-1] is b.history[-1]
    assert a.history is not b.history  # each run's own list: it holds the run's queueing
    report(s, "r1", RunState.RUNNING, 2.0)  # a later change of one leaves the other as it was
    assert s.runs["r2"] == b and b.gang[0].state is RunState.PREPARING
    assert s.runs["r1"].gang[0].state is RunState.RUNNING


def test_unknown_target_is_refused_with_the_known_ones_listed() -> None:
    s = started()
    (reply,) = replies(submit(s, "r1", 1.0, target="gpu-box"))
    assert isinstance(reply, m.ErrorReply) and reply.code == "unknown_target"
    assert "'gpu-box'" in reply.message and "known targets: local" in reply.message
    assert s.runs == {} and not s.runs.changed


def test_bad_experiment_name_changes_nothing() -> None:
    s = started()
    (reply,) = replies(submit(s, "r1", 1.0, experiment="no spaces"))
    assert isinstance(reply, m.ErrorReply) and "letters, digits" in reply.message
    assert s.runs == {}


def test_validate_only_creates_nothing() -> None:
    s = started()
    req = m.SubmitRequest(spec=spec(), validate_only=True)
    cmds = core.handle(s, core.Submitted(request=req, run_id="r1", reply_to="x"), 1.0, CFG)
    assert replies(cmds) == [m.SubmitValid(target="local")]
    assert s.runs == {}


def test_same_submission_id_gives_the_same_run() -> None:
    s = started()
    submit(s, "r1", 1.0, submission_id="abc")
    cmds = submit(s, "r2", 1.5, submission_id="abc")
    assert replies(cmds) == [m.SubmitAccepted(run_id="r1", created=False)]
    assert set(s.runs) == {"r1"}


def test_full_lifecycle_and_eof() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    for i, st in enumerate([RunState.STARTING, RunState.RUNNING, RunState.FINALIZING]):
        assert report(s, "r1", st, 2.0 + i) == []
    cmds = report(s, "r1", RunState.COMPLETED, 6.0, exit_code=0)
    assert core.PublishEof(run_id="r1", attempt=1) in cmds
    rec = s.runs["r1"]
    assert (rec.state, rec.exit_code, rec.started_at, rec.ended_at) == (
        RunState.COMPLETED,
        0,
        3.0,
        6.0,
    )
    assert [h.state for h in rec.history] == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    core.forget_finished(s, "r1")
    assert "r1" not in s.runs


def test_report_for_a_stale_attempt_is_refused_and_told_to_stop() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    cmds = report(s, "r1", RunState.RUNNING, 2.0, attempt=0)
    assert sends(cmds) == [("a1", "Cancel", "r1", 0)]
    assert s.runs["r1"].state is RunState.PREPARING
    # a stale terminal report changes nothing either, and needs no stop
    assert sends(report(s, "r1", RunState.COMPLETED, 2.0, attempt=0)) == []
    assert s.runs["r1"].state is RunState.PREPARING


def test_duplicate_report_is_ignored() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0)
    s.runs.take_changes()
    assert report(s, "r1", RunState.STARTING, 2.5) == []
    assert not s.runs.changed


def test_lost_agent_requeues_with_attempt_raised_and_finalizing_fails() -> None:
    s = started()
    submit(s, "r1", 1.0)
    submit(s, "r2", 1.0)
    core.decide(s, 1.0, CFG)
    for st in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
        report(s, "r2", st, 2.0)
    core.decide(s, 9.5, CFG)  # within the lease (last heard at 0): nothing happens
    assert s.runs["r1"].state is RunState.PREPARING
    core.decide(s, 11.5, CFG)
    # lost: nothing new goes there, but its runs wait out the kill grace (the agent, if it is
    # only cut off, stops them itself at its lease) so no attempt runs beside the next one
    assert s.agents["a1"].lost
    assert s.runs["r1"].state is RunState.PREPARING and s.runs["r2"].state is RunState.FINALIZING
    cmds = core.decide(s, 20.5, CFG)  # lease 10 + kill grace 10 after it was last heard
    assert (s.runs["r1"].state, s.runs["r1"].attempt, s.runs["r1"].agent_id) == (
        RunState.QUEUED,
        2,
        None,
    )
    assert s.runs["r2"].state is RunState.FAILED and s.runs["r2"].error.kind == "lost"
    assert core.PublishEof(run_id="r2", attempt=1) in cmds


def test_scheduler_restart_gives_agents_a_full_lease() -> None:
    s = started()
    s.started_at = 100.0  # the scheduler came back at t=100; the agent was last heard at 0
    core.decide(s, 105.0, CFG)
    assert not s.agents["a1"].lost
    core.decide(s, 110.5, CFG)
    assert s.agents["a1"].lost


def test_a_scheduler_cut_off_from_the_broker_judges_no_agent_until_it_is_back() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    core.handle(s, core.BrokerAway(), 5.0, CFG)
    core.decide(s, 40.0, CFG)  # far past lease + kill grace, but nothing could be heard
    assert not s.agents["a1"].lost
    assert (s.runs["r1"].state, s.runs["r1"].attempt) == (RunState.PREPARING, 1)
    core.handle(s, core.BrokerBack(), 41.0, CFG)  # back: a full lease from now
    core.decide(s, 50.0, CFG)
    assert not s.agents["a1"].lost
    core.decide(s, 51.5, CFG)
    assert s.agents["a1"].lost


def test_an_attempt_its_agent_gave_back_after_losing_its_lease_is_requeued() -> None:
    s = started()
    submit(s, "r1", 1.0, max_retries=0)
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0)
    report(s, "r1", RunState.RUNNING, 2.5)
    lost = m.RunError(kind="lost", message="the agent lost its lease")
    report(s, "r1", RunState.QUEUED, 3.0, error=lost)
    rec = s.runs["r1"]
    assert (rec.state, rec.attempt, rec.retries_used) == (RunState.QUEUED, 2, 0)
    assert sends(core.decide(s, 3.0, CFG)) == [("a1", "Assign", "r1", 2)]


def test_agent_restart_requeues_runs_of_the_old_incarnation() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(incarnation="i2", cpus=2)), 2.0, CFG)
    cmds = core.decide(s, 2.0, CFG)
    # requeued as attempt 2, and placed again on the new incarnation
    assert sends(cmds) == [("a1", "Assign", "r1", 2)]
    assert s.runs["r1"].agent_incarnation == "i2"


def test_unacknowledged_assign_is_resent_to_the_same_incarnation() -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 2.0, CFG)
    assert sends(core.decide(s, 2.0, CFG)) == []  # too early to tell
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 5.5, CFG)
    assert sends(core.decide(s, 5.5, CFG)) == [("a1", "Assign", "r1", 1)]
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2, running=[("r1", 1)])), 6.0, CFG)
    assert sends(core.decide(s, 9.0, CFG)) == []


def test_a_long_cycle_does_not_count_against_the_agent_confirming_an_assign() -> None:
    # The Assign decided at 1.0 is published after that cycle's writes; the next cycle starts
    # at 4.5. A heartbeat received just before then cannot show the run yet: no resend.
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 4.4, CFG)
    assert sends(core.decide(s, 4.5, CFG)) == []
    # counted from the cycle after it went out: 3 s of heartbeats without it, then resent
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 7.0, CFG)
    assert sends(core.decide(s, 7.0, CFG)) == []
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 7.6, CFG)
    assert sends(core.decide(s, 7.6, CFG)) == [("a1", "Assign", "r1", 1)]


def test_agent_holding_an_unknown_attempt_is_told_to_stop_it() -> None:
    s = started()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(running=[("ghost", 3)])), 1.0, CFG)
    assert sends(core.decide(s, 1.0, CFG)) == [("a1", "Cancel", "ghost", 3)]


def test_cancel_queued_and_running() -> None:
    s = SchedulerState()
    submit(s, "q", 1.0)
    cmds = core.handle(s, core.CancelAsked(run_id="q", reply_to="x"), 2.0, CFG)
    assert s.runs["q"].state is RunState.CANCELED
    assert core.PublishEof(run_id="q", attempt=1) in cmds
    assert replies(cmds) == [m.CancelAccepted(run_id="q", state=RunState.CANCELED)]

    s = started()
    submit(s, "r", 1.0)
    core.decide(s, 1.0, CFG)
    cmds = core.handle(s, core.CancelAsked(run_id="r", reply_to="x"), 2.0, CFG)
    assert sends(cmds) == [("a1", "Cancel", "r", 1)]
    assert s.runs["r"].cancel_requested and s.runs["r"].state is RunState.PREPARING
    report(s, "r", RunState.CANCELED, 3.0)
    assert s.runs["r"].state is RunState.CANCELED


def test_cancel_requested_on_a_lost_agent_ends_canceled_not_requeued() -> None:
    s = started()
    submit(s, "r", 1.0)
    core.decide(s, 1.0, CFG)
    core.handle(s, core.CancelAsked(run_id="r", reply_to="x"), 2.0, CFG)
    core.decide(s, 21.0, CFG)  # past lease + kill grace
    assert s.runs["r"].state is RunState.CANCELED and s.runs["r"].attempt == 1


# A live agent no longer holding the attempt its run is on: (name, listed as, cancel asked,
# heartbeats at, then (state, attempt), why it was requeued). Grace and unheld bound: 60 s.
P, C = RunState.PREPARING, RunState.CANCELED
UNHELD_CASES: list[tuple[str, str, bool, list[float], tuple[RunState, int], str | None]] = [
    ("running: held", "running", False, [2, 100], (P, 1), None),
    ("finished, its report may be on its way", "finished", False, [2, 50], (P, 1), None),
    (
        "finished past the grace without a report: requeued (and placed again)",
        "finished",
        False,
        [2, 63],
        (P, 2),
        "attempt 1 ended on agent a1 without a report",
    ),
    ("finished past the grace, cancel asked: canceled", "finished", True, [2, 63], (C, 1), None),
    ("listed nowhere, the Assign still being resent", "nowhere", False, [2, 50], (P, 1), None),
    (
        "listed nowhere long after the Assign: requeued (and placed again)",
        "nowhere",
        False,
        [2, 62],
        (P, 2),
        "agent a1 does not hold attempt 1",
    ),
    ("listed nowhere, cancel asked: canceled", "nowhere", True, [2, 62], (C, 1), None),
]


@pytest.mark.parametrize(
    ("listed", "cancel", "beats", "then", "why"),
    [c[1:] for c in UNHELD_CASES],
    ids=[c[0] for c in UNHELD_CASES],
)
def test_a_run_whose_live_agent_no_longer_holds_its_attempt_does_not_stay_active(
    listed: str, cancel: bool, beats: list[float], then: tuple[RunState, int], why: str | None
) -> None:
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    if cancel:
        core.handle(s, core.CancelAsked(run_id="r1", reply_to="x"), 1.5, CFG)
    refs = {listed: [("r1", 1)]} if listed != "nowhere" else {}
    cmds: list[core.Command] = []
    for at in beats:
        core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2, **refs)), at, CFG)
        cmds = core.decide(s, at, CFG)
    rec = s.runs["r1"]
    assert (rec.state, rec.attempt) == then
    requeued = [c.fields["why"] for c in cmds if isinstance(c, core.Log) and "why" in c.fields]
    assert requeued == ([why] if why else [])


def test_a_run_no_agent_could_ever_hold_is_refused_at_submit() -> None:
    s = started()
    (reply,) = replies(submit(s, "big", 1.0, resources=m.Resources(cpus=3)))
    assert isinstance(reply, m.ErrorReply)
    assert "no agent of target 'local' can hold it" in reply.message
    assert "has 2 CPUs" in reply.message
    assert s.runs == {}


def test_why_explains_a_waiting_run() -> None:
    s = started()
    submit(s, "first", 1.0, resources=m.Resources(cpus=2))
    submit(s, "second", 2.0, resources=m.Resources(cpus=1))
    core.decide(s, 2.0, CFG)
    assert s.why.examined == {"second": {"CPUs busy": 1}}
    cmds = core.handle(s, core.WhyAsked(run_id="second", reply_to="x"), 2.0, CFG)
    (reply,) = replies(cmds)
    assert isinstance(reply, m.WhyReply) and reply.reasons == {"CPUs busy": 1}
    assert "1 CPUs busy" in reply.summary


def test_a_later_report_delivered_first_implies_the_steps_before_it() -> None:
    """After a scheduler restart, redelivered reports may come out of order: Completed
    before Finalizing must still complete the run (it is acked either way)."""
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0)
    report(s, "r1", RunState.RUNNING, 2.5)
    report(s, "r1", RunState.COMPLETED, 4.0, exit_code=0)
    rec = s.runs["r1"]
    assert (rec.state, rec.exit_code) == (RunState.COMPLETED, 0)
    assert [h.state for h in rec.history][-2:] == [RunState.FINALIZING, RunState.COMPLETED]
    report(s, "r1", RunState.FINALIZING, 3.0)  # the earlier one, late: changes nothing
    assert s.runs["r1"].state is RunState.COMPLETED


def test_a_run_on_an_agent_the_scheduler_never_heard_of_waits_a_lease_and_grace() -> None:
    """A restarted scheduler whose store had no record of the agent (never written, or
    lost): the run is not requeued at once, since that agent may be running it."""
    s = started()
    submit(s, "r1", 1.0)
    core.decide(s, 1.0, CFG)
    s.agents.forget("a1")
    s.started_at = 100.0
    core.decide(s, 119.0, CFG)  # within lease 10 + kill grace 10 of the restart
    assert (s.runs["r1"].state, s.runs["r1"].attempt) == (RunState.PREPARING, 1)
    core.decide(s, 120.5, CFG)
    assert (s.runs["r1"].state, s.runs["r1"].attempt) == (RunState.QUEUED, 2)
