"""The scheduler with an engine agent (a Slurm login node): it knows the agent's engine, keeps
the engine's job on the run, places a gang on the one agent."""

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto.engines import EngineJob
from sortie.proto.gang import members
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.runs import with_engine_job
from tests.builders import heartbeat, record
from tests.scheduler.test_core import CFG, report, sends, submit


def job(state: str, reason: str | None = None, since: float = 1.0) -> EngineJob:
    return EngineJob(engine="slurm", job_id="1234", state=state, reason=reason, since=since)


def slurm_started() -> SchedulerState:
    s = SchedulerState(started_at=0.0)
    hb = msgspec.structs.replace(heartbeat(target="hpc", cpus=2), engine="slurm")
    core.handle(s, core.HeartbeatSeen(heartbeat=hb), 0.0, CFG)
    return s


def rep(**kw: object) -> m.RunReport:
    base: dict[str, object] = {
        "agent_id": "a1",
        "incarnation": "i1",
        "run_id": "r1",
        "attempt": 1,
        "state": RunState.STARTING,
        "at": 2.0,
    }
    return m.RunReport(**(base | kw))


@pytest.mark.parametrize(
    ("before", "given", "after"),
    [
        (None, None, None),  # a plain agent's report
        (None, job("PENDING", "Resources"), job("PENDING", "Resources")),
        (job("PENDING", "Resources"), job("PENDING", "Priority"), job("PENDING", "Priority")),
        (job("PENDING", "Resources"), None, job("PENDING", "Resources")),  # kept
        (job("RUNNING"), job("RUNNING"), job("RUNNING")),
    ],
)
def test_with_engine_job(
    before: EngineJob | None, given: EngineJob | None, after: EngineJob | None
) -> None:
    rec = record("r1", RunState.STARTING, engine_job=before)
    out = with_engine_job(rec, rep(engine_job=given))
    assert out.engine_job == after
    assert (out is rec) == (before == after)


def test_the_agents_engine_is_known_and_recorded() -> None:
    s = slurm_started()
    assert s.agents["a1"].engine == "slurm"
    assert s.agents["a1"].record().engine == "slurm"


def test_a_gang_takes_the_one_engine_agent() -> None:
    s = slurm_started()
    submit(s, "r1", 1.0, target="hpc", node_count=3, resources=m.Resources(cpus=2))
    cmds = core.decide(s, 1.0, CFG)
    assert sends(cmds) == [("a1", "Assign", "r1", 1)]
    assert [g.agent_id for g in members(s.runs["r1"])] == ["a1"]


def test_a_new_slurm_reason_is_kept_though_the_run_does_not_move() -> None:
    s = slurm_started()
    submit(s, "r1", 1.0, target="hpc")
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0, engine_job=job("PENDING", "Priority", 2.0))
    assert s.runs["r1"].engine_job == job("PENDING", "Priority", 2.0)
    s.runs.take_changes()
    report(s, "r1", RunState.STARTING, 3.0, engine_job=job("PENDING", "Resources", 3.0))
    assert s.runs["r1"].engine_job == job("PENDING", "Resources", 3.0)
    assert "r1" in s.runs.changed
    assert s.runs["r1"].state is RunState.STARTING
    report(s, "r1", RunState.RUNNING, 4.0, engine_job=job("RUNNING", None, 4.0))
    assert (s.runs["r1"].state, s.runs["r1"].engine_job) == (
        RunState.RUNNING,
        job("RUNNING", None, 4.0),
    )


def test_a_requeued_attempt_forgets_the_old_job() -> None:
    s = slurm_started()
    submit(s, "r1", 1.0, target="hpc")
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0, engine_job=job("PENDING", "Resources"))
    report(s, "r1", RunState.QUEUED, 3.0, error=m.RunError(kind="preempted", message="x"))
    assert s.runs["r1"].attempt == 2
    assert s.runs["r1"].engine_job is None


# 12:00:01 UTC on some day, so the text's clock reads 12:00:01
NOON = 1_700_000_000.0 - (1_700_000_000.0 % 86400) + 12 * 3600 + 1


def test_run_why_says_the_run_waits_in_slurms_queue() -> None:
    s = slurm_started()
    submit(s, "r1", 1.0, target="hpc")
    core.decide(s, 1.0, CFG)
    report(s, "r1", RunState.STARTING, 2.0, engine_job=job("PENDING", "Resources", NOON))
    cmds = core.handle(s, core.WhyAsked(run_id="r1", reply_to="x"), NOON + 180, CFG)
    (reply,) = [c.message for c in cmds if isinstance(c, core.Reply)]
    assert isinstance(reply, m.WhyReply)
    assert reply.summary == (
        "run r1 is Starting on agent a1, waiting in slurm's queue: Resources "
        "(slurm job 1234: PENDING (Resources) since 12:00:01 UTC (3 min ago))"
    )
    report(s, "r1", RunState.RUNNING, 3.0, engine_job=job("RUNNING", None, NOON + 200))
    cmds = core.handle(s, core.WhyAsked(run_id="r1", reply_to="x"), NOON + 230, CFG)
    (reply,) = [c.message for c in cmds if isinstance(c, core.Reply)]
    assert isinstance(reply, m.WhyReply)
    assert reply.summary == (
        "run r1 is not waiting: it is Running on agent a1 "
        "(slurm job 1234: RUNNING since 12:03:21 UTC (30 s ago))"
    )


def test_the_engine_queues_so_its_agent_is_never_full() -> None:
    s = slurm_started()  # 2 CPUs: the largest node Slurm has
    submit(s, "r1", 1.0, target="hpc", resources=m.Resources(cpus=2))
    core.decide(s, 1.0, CFG)
    submit(s, "r2", 2.0, target="hpc", resources=m.Resources(cpus=2))
    cmds = core.decide(s, 2.0, CFG)
    assert sends(cmds) == [("a1", "Assign", "r2", 1)]  # r1 still holds "its" 2 CPUs
