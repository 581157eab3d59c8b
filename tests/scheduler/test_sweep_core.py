"""Sweeps in the scheduler's core (``scheduler/sweep_runs.py``) with the real controller:
admission, trials submitted and placed in one pass, early termination, the sweep's end, a
user's cancel, and a restart rebuilt from the stored records and the same metrics."""

from __future__ import annotations

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler import core
from sortie.scheduler.metrics import Metrics
from sortie.scheduler.model import SchedulerState, restore
from sortie.scheduler.reconcile import Timing
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=1000, assign_ack_s=1000))
SWEEP = "exp_1_aaaa"


def sweep_spec(**kw: object) -> sw.SweepSpec:
    base: dict[str, object] = {
        "space": {"lr": sw.Choice(values=[0.1, 0.2, 0.3])},
        "sampling": sw.GridSampling(),
        "primary_metric": "acc",
        "goal": "maximize",
        "max_total_trials": 3,
        "max_concurrent_trials": 2,
    }
    base.update(kw)
    return sw.SweepSpec(**base)


def started(cpus: float = 4) -> SchedulerState:
    s = SchedulerState(started_at=0.0)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=cpus)), 0.0, CFG)
    return s


def submit(
    s: SchedulerState,
    sweep: sw.SweepSpec,
    *,
    now: float = 1.0,
    validate_only: bool = False,
    **kw: object,
) -> list[object]:
    req = m.SubmitRequest(
        spec=spec(arguments=["--epochs", "3"], tags={"team": "a"}, **kw),
        sweep=sweep,
        validate_only=validate_only,
    )
    cmds = core.handle(s, core.Submitted(request=req, run_id=SWEEP, reply_to="r"), now, CFG)
    return [c.message for c in cmds if isinstance(c, core.Reply)]


def report(
    s: SchedulerState, run_id: str, st: RunState, now: float, **kw: object
) -> list[core.Command]:
    rec = s.runs[run_id]
    rep = m.RunReport(
        agent_id="a1", incarnation="i1", run_id=run_id, attempt=rec.attempt, state=st, at=now, **kw
    )
    return core.handle(s, core.ReportSeen(report=rep), now, CFG)


def run_to(s: SchedulerState, run_id: str, st: RunState, now: float) -> None:
    """A placed trial reports its steps up to ``st``."""
    for step in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING, RunState.COMPLETED):
        if s.runs[run_id].state is st:
            return
        report(s, run_id, step, now, **({"exit_code": 0} if step is RunState.COMPLETED else {}))
        if step is st:
            return


def log(s: SchedulerState, run_id: str, *values: float, now: float = 2.0) -> None:
    attempt = s.runs[run_id].attempt
    core.handle(
        s, core.MetricsSeen(run_id=run_id, attempt=attempt, writer="a1", values=values), now, CFG
    )


def cancel_reasons(cmds: list[core.Command]) -> list[tuple[str, str]]:
    return [
        (c.command.run_id, c.command.reason)
        for c in cmds
        if isinstance(c, core.SendToAgent) and isinstance(c.command, m.Cancel)
    ]


def sends(cmds: list[core.Command]) -> list[tuple[str, str]]:
    return [
        (type(c.command).__name__, c.command.run_id)
        for c in cmds
        if isinstance(c, core.SendToAgent) and isinstance(c.command, m.Assign | m.Cancel)
    ]


# --- admission -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sweep", "kw", "words"),
    [
        (sweep_spec(max_total_trials=0), {}, "max_total_trials"),
        (sweep_spec(space={}), {}, "space"),
        (sweep_spec(space={"epochs": sw.Choice(values=[1, 2])}), {}, "--epochs"),
        (sweep_spec(), {"target": "nowhere"}, "nowhere"),
    ],
)
def test_a_bad_sweep_is_refused_and_nothing_is_stored(
    sweep: sw.SweepSpec, kw: dict[str, object], words: str
) -> None:
    s = started()
    for validate_only in (False, True):
        (reply,) = submit(s, sweep, validate_only=validate_only, **kw)
        assert isinstance(reply, m.ErrorReply) and reply.code in {"bad_request", "unknown_target"}
        assert words in reply.message
    core.decide(s, 2.0, CFG)
    assert not s.runs and not s.sweeps


def test_validate_only_checks_and_creates_nothing() -> None:
    s = started()
    assert submit(s, sweep_spec(), validate_only=True) == [m.SubmitValid(target="local")]
    assert not s.runs


def test_a_sweep_is_one_record_and_its_first_trials_are_placed_in_the_same_pass() -> None:
    s = started()
    assert submit(s, sweep_spec()) == [m.SubmitAccepted(run_id=SWEEP)]
    rec = s.runs[SWEEP]
    assert rec.state is RunState.RUNNING and rec.sweep is not None and rec.sweep.issued == 0
    assert rec.spec.arguments == ["--epochs", "3"]  # the template, kept as is
    assert [r for r in s.runs if r != SWEEP] == []
    cmds = core.decide(s, 1.0, CFG)
    t0, t1 = sw.trial_run_id(SWEEP, 0), sw.trial_run_id(SWEEP, 1)
    assert sends(cmds) == [("Assign", t0), ("Assign", t1)]  # concurrency 2: two of three
    for i, t in enumerate((t0, t1)):
        trial = s.runs[t]
        assert trial.parent_id == SWEEP and trial.trial is not None
        assert trial.trial.index == i and trial.tags == {"team": "a"}
        assert trial.spec.arguments == ["--epochs", "3", "--lr", str(trial.trial.params["lr"])]
        assert trial.state is RunState.PREPARING
    assert s.runs[SWEEP].sweep.issued == 2  # type: ignore[union-attr]
    assert SWEEP not in s.children  # trials end by their own reports, not with the sweep


# --- a grid sweep to its end -----------------------------------------------------------------


def test_a_grid_sweep_runs_every_point_once_and_names_the_best() -> None:
    s = started()
    submit(s, sweep_spec())
    core.decide(s, 1.0, CFG)
    t = [sw.trial_run_id(SWEEP, i) for i in range(3)]
    run_to(s, t[0], RunState.RUNNING, 2.0)
    log(s, t[0], 0.5, 0.7)
    run_to(s, t[0], RunState.COMPLETED, 3.0)
    assert sends(core.decide(s, 3.0, CFG)) == [("Assign", t[2])]  # a free slot: the last point
    for tid, vals in ((t[1], (0.9,)), (t[2], (0.6, 0.8))):
        run_to(s, tid, RunState.RUNNING, 4.0)
        log(s, tid, *vals)
        run_to(s, tid, RunState.COMPLETED, 5.0)
    core.decide(s, 5.0, CFG)
    rec = s.runs[SWEEP]
    assert rec.state is RunState.COMPLETED
    assert rec.sweep is not None and rec.sweep.issued == 3 and rec.sweep.ended_because
    assert rec.sweep.best_run_id == t[1] and rec.sweep.best_objective == 0.9
    lrs = sorted(s.runs[x].trial.params["lr"] for x in t)  # type: ignore[union-attr]
    assert lrs == [0.1, 0.2, 0.3]
    assert s.runs[t[0]].trial == m.Trial(index=0, params={"lr": 0.1}, objective=0.7, intervals=2)
    assert SWEEP not in s.sweeps  # an ended sweep is no longer tracked


def test_a_sweep_whose_trials_all_fail_fails() -> None:
    s = started()
    submit(s, sweep_spec(max_total_trials=2))
    core.decide(s, 1.0, CFG)
    for i in range(2):
        tid = sw.trial_run_id(SWEEP, i)
        err = m.RunError(kind=ErrorKind.EXIT_CODE, message="exit 1")
        report(s, tid, RunState.FAILED, 2.0, exit_code=1, error=err)
    core.decide(s, 2.0, CFG)
    rec = s.runs[SWEEP]
    assert rec.state is RunState.FAILED and rec.error is not None
    assert "no trial completed" in rec.error.message


# --- early termination -----------------------------------------------------------------------


def test_a_policy_stop_is_a_cancel_that_ends_early_terminated_with_its_reason() -> None:
    s = started()
    bandit = sw.Bandit(slack_amount=0.1, evaluation_interval=1, delay_evaluation=0)
    submit(s, sweep_spec(policy=bandit, max_total_trials=2))
    core.decide(s, 1.0, CFG)
    good, poor = sw.trial_run_id(SWEEP, 0), sw.trial_run_id(SWEEP, 1)
    run_to(s, good, RunState.RUNNING, 2.0)
    run_to(s, poor, RunState.RUNNING, 2.0)
    log(s, good, 1.0)
    log(s, poor, 0.1)
    cmds = core.decide(s, 3.0, CFG)
    assert sends(cmds) == [("Cancel", poor)]
    assert cancel_reasons(cmds) == [(poor, "early_terminated")]  # what its script reads
    assert s.runs[poor].cancel_requested and s.runs[good].state is RunState.RUNNING
    # the agent stops it (SIGTERM, grace, SIGKILL) and reports it canceled
    canceled = m.RunError(kind=ErrorKind.CANCELED, message="canceled")
    report(s, poor, RunState.CANCELED, 4.0, error=canceled)
    rec = s.runs[poor]
    assert rec.state is RunState.CANCELED and rec.error is not None
    assert rec.error.kind is ErrorKind.EARLY_TERMINATED and rec.error.message
    assert sends(core.decide(s, 4.0, CFG)) == []  # total reached: nothing more to start
    run_to(s, good, RunState.COMPLETED, 5.0)
    core.decide(s, 5.0, CFG)
    assert s.runs[SWEEP].state is RunState.COMPLETED
    assert s.runs[SWEEP].sweep.best_run_id == good  # type: ignore[union-attr]


def test_metrics_of_another_attempt_or_agent_are_ignored() -> None:
    s = started()
    submit(s, sweep_spec())
    core.decide(s, 1.0, CFG)
    tid = sw.trial_run_id(SWEEP, 0)
    run_to(s, tid, RunState.RUNNING, 2.0)
    core.handle(s, core.MetricsSeen(run_id=tid, attempt=2, writer="a1", values=(9.0,)), 2.0, CFG)
    core.handle(s, core.MetricsSeen(run_id=tid, attempt=1, writer="zz", values=(9.0,)), 2.0, CFG)
    log(s, tid, 0.5)
    assert s.sweeps[SWEEP].metrics[tid] == [0.5]


# --- a user's cancel -------------------------------------------------------------------------


def test_canceling_a_sweep_cancels_its_trials_and_starts_none() -> None:
    s = started()
    submit(s, sweep_spec(max_total_trials=3))
    core.decide(s, 1.0, CFG)
    t0, t1 = sw.trial_run_id(SWEEP, 0), sw.trial_run_id(SWEEP, 1)
    run_to(s, t0, RunState.RUNNING, 2.0)
    cmds = core.handle(s, core.CancelAsked(run_id=SWEEP, reply_to="r"), 3.0, CFG)
    assert sorted(sends(cmds)) == [("Cancel", t0), ("Cancel", t1)]
    assert sorted(cancel_reasons(cmds)) == [(t0, "canceled"), (t1, "canceled")]
    reply = next(c.message for c in cmds if isinstance(c, core.Reply))
    assert reply == m.CancelAccepted(run_id=SWEEP, state=RunState.RUNNING)
    for tid in (t0, t1):
        err = m.RunError(kind=ErrorKind.CANCELED, message="canceled")
        report(s, tid, RunState.CANCELED, 4.0, error=err)
        assert s.runs[tid].error.kind is ErrorKind.CANCELED  # type: ignore[union-attr]
    assert sends(core.decide(s, 4.0, CFG)) == []
    rec = s.runs[SWEEP]
    assert rec.state is RunState.CANCELED and rec.sweep.ended_because == "canceled"  # type: ignore[union-attr]
    assert sw.trial_run_id(SWEEP, 2) not in s.runs


# --- a restart -------------------------------------------------------------------------------


def stored(s: SchedulerState, ended: dict[str, m.RunRecord]) -> list[m.RunRecord]:
    """What the store holds: every record in memory, and the ended ones written earlier."""
    for rec in s.runs.values():
        if rec.state in TERMINAL:
            ended[rec.run_id] = rec
    return [*ended.values(), *(r for r in s.runs.values() if r.state not in TERMINAL)]


def restarted(records: list[m.RunRecord], metrics: dict[str, list[float]]) -> SchedulerState:
    s = SchedulerState(started_at=10.0, sweep_feed_ready=False)
    for rec in records:
        restore(s, rec, 10.0)
    core.handle(s, core.Started(children_of=frozenset()), 10.0, CFG)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=4)), 10.0, CFG)
    assert sends(core.decide(s, 10.0, CFG)) == []  # nothing decided before the feed is read
    for run_id, values in metrics.items():  # the feed reads the stream again
        attempt = next(r.attempt for r in records if r.run_id == run_id)
        core.handle(
            s,
            core.MetricsSeen(run_id=run_id, attempt=attempt, writer="a1", values=tuple(values)),
            10.0,
            CFG,
        )
    core.handle(s, core.SweepFeedReady(), 10.0, CFG)
    return s


def test_a_restart_rebuilt_from_the_store_and_the_stream_decides_the_same() -> None:
    sweep = sweep_spec(
        space={"lr": sw.Uniform(min_value=0.0, max_value=1.0)},
        sampling=sw.RandomSampling(seed=7),
        max_total_trials=4,
        max_concurrent_trials=2,
    )
    s = started()
    submit(s, sweep)
    core.decide(s, 1.0, CFG)
    t0, t1 = sw.trial_run_id(SWEEP, 0), sw.trial_run_id(SWEEP, 1)
    run_to(s, t0, RunState.RUNNING, 2.0)
    log(s, t0, 0.3)
    run_to(s, t0, RunState.COMPLETED, 3.0)
    ended: dict[str, m.RunRecord] = {}
    records = stored(s, ended)
    metrics = {t0: [0.3]}
    # the scheduler goes on here ...
    core.decide(s, 3.0, CFG)
    t2 = sw.trial_run_id(SWEEP, 2)
    # ... and, killed before that pass was written, a new one starts from the store
    again = restarted(records, metrics)
    assert again.sweeps[SWEEP].trials.keys() == {t0, t1}  # the ended trial too
    cmds = core.decide(again, 10.0, CFG)
    assert sends(cmds) == [("Assign", t2)]  # the same next trial, with the same parameters
    assert again.runs[t2].trial == s.runs[t2].trial
    assert again.runs[SWEEP].sweep.issued == 3  # type: ignore[union-attr]


def test_trials_stored_before_their_sweep_counted_them_are_not_issued_again() -> None:
    s = started()
    submit(s, sweep_spec(max_total_trials=3, max_concurrent_trials=3))
    core.decide(s, 1.0, CFG)
    records = stored(s, {})
    # the crash came between the trials' writes and the sweep's: it still says 0 issued
    records = [
        msgspec.structs.replace(r, sweep=msgspec.structs.replace(r.sweep, issued=0))
        if r.sweep is not None
        else r
        for r in records
    ]
    again = restarted(records, {})
    cmds = core.decide(again, 10.0, CFG)
    assert [a for a in sends(cmds) if a[0] == "Assign"] == []  # every point already issued
    assert again.runs[SWEEP].sweep.issued == 3  # type: ignore[union-attr]
    assert sorted(r for r in again.runs if r != SWEEP) == [
        sw.trial_run_id(SWEEP, i) for i in range(3)
    ]


def test_the_sweep_metrics_count_active_sweeps_trials_started_and_early_terminated() -> None:
    s = started()
    metrics = Metrics(lambda: s)

    def cycle(now: float) -> None:  # as the daemon: observe, then the changes are written
        core.decide(s, now, CFG)
        metrics.observe([], s, now)
        s.runs.take_changes()
        for run_id in [r for r, rec in s.runs.items() if rec.state in TERMINAL]:
            core.forget_finished(s, run_id)

    bandit = sw.Bandit(slack_amount=0.1)
    submit(s, sweep_spec(policy=bandit, max_total_trials=2))
    cycle(1.0)
    good, poor = sw.trial_run_id(SWEEP, 0), sw.trial_run_id(SWEEP, 1)
    for tid, value in ((good, 1.0), (poor, 0.1)):
        run_to(s, tid, RunState.RUNNING, 2.0)
        log(s, tid, value)
    cycle(3.0)
    report(s, poor, RunState.CANCELED, 4.0)
    cycle(4.0)
    reg = metrics.registry
    assert reg.get_sample_value("sortie_sweeps_active") == 1
    assert reg.get_sample_value("sortie_sweep_trials_started_total", {"target": "local"}) == 2
    early = reg.get_sample_value("sortie_sweep_trials_early_terminated_total", {"target": "local"})
    assert early == 1


def test_a_trial_that_ended_before_its_last_metrics_gets_its_objective_in_the_store() -> None:
    s = started()
    submit(s, sweep_spec())
    core.decide(s, 1.0, CFG)
    tid = sw.trial_run_id(SWEEP, 0)
    run_to(s, tid, RunState.RUNNING, 2.0)
    log(s, tid, 0.4)
    run_to(s, tid, RunState.COMPLETED, 3.0)  # the report came first ...
    core.decide(s, 3.0, CFG)
    core.forget_finished(s, tid)  # ... stored, and out of memory
    core.handle(s, core.MetricsSeen(run_id=tid, attempt=1, writer="a1", values=(0.9,)), 4.0, CFG)
    cmds = core.decide(s, 4.0, CFG)
    assert core.SetTrialObjective(run_id=tid, objective=0.9, intervals=2) in cmds
    assert s.runs[SWEEP].sweep.best_run_id == tid  # type: ignore[union-attr]
    assert s.runs[SWEEP].sweep.best_objective == 0.9  # type: ignore[union-attr]
