"""How a queued run's wait for an agent is said (``RunRecord.waiting``): one sentence that the
scheduler's `run why`, `run show`, `sortie status` and the SDK's wait all print; and a run's
wait in its engine's queue (``RunRecord.engine_job``). Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from sortie.proto import messages as m
from sortie.proto.engines import EngineJob
from sortie.proto.states import RunState


def ago(seconds: float) -> str:
    """A short duration: "40 s", "3 min", "2 h"."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def describe(target: str, wait: m.TargetWait, now: float) -> str:
    """E.g. "target gpu-pool has no agent: its only node was stopped by the autoscaler at
    12:01:02 UTC (3 min ago)"."""
    at = datetime.fromtimestamp(wait.since, UTC).strftime("%H:%M:%S UTC")
    return f"target {target} has no agent: {wait.reason} (since {at}, {ago(now - wait.since)} ago)"


# an engine job's states that mean it waits in the engine's queue (Slurm's PENDING; a Spark
# driver SUBMITTED or WAITING for a worker)
ENGINE_QUEUED = frozenset({"PENDING", "SUBMITTED", "WAITING"})


def describe_engine_job(job: EngineJob, now: float) -> str:
    """E.g. "slurm job 1234: PENDING (Resources) since 12:00:01 UTC (3 min ago)"."""
    at = datetime.fromtimestamp(job.since, UTC).strftime("%H:%M:%S UTC")
    why = f" ({job.reason})" if job.reason else ""
    return (
        f"{job.engine} job {job.job_id}: {job.state}{why} since {at} ({ago(now - job.since)} ago)"
    )


def shown_state(rec: m.RunRecord) -> RunState:
    """The state a run is shown in (CLI, SDK, dashboard): a Starting run whose job waits in its
    engine's queue is Queued there, as v1's Queued ("the job is queued in the compute target").
    The record stays Starting: it is placed, and is never placed again from there."""
    return RunState.QUEUED if engine_wait(rec) is not None else rec.state


def engine_wait(rec: m.RunRecord) -> str | None:
    """Why a run handed to an engine has not started, or None: "waiting in slurm's queue:
    Resources" for a Starting run whose engine job is still queued there."""
    job = rec.engine_job
    if job is None or rec.state is not RunState.STARTING or job.state not in ENGINE_QUEUED:
        return None
    return f"waiting in {job.engine}'s queue: {job.reason or 'no reason given'}"
