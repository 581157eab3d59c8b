"""How a run handed to an engine is said: `run why`, `run show`, the progress line and the
JSON view share these (proto/waiting.py, client/views.py). Pure."""

from __future__ import annotations

import pytest

from sortie.cli.progress import status_line
from sortie.client.views import run_view
from sortie.proto import messages as m
from sortie.proto.engines import EngineJob, EngineKind
from sortie.proto.states import RunState
from sortie.proto.waiting import describe_engine_job, engine_wait, shown_state
from tests.builders import record

NOON = 1_700_000_000.0 - (1_700_000_000.0 % 86400) + 12 * 3600 + 1  # 12:00:01 UTC


def job(engine: EngineKind, state: str, reason: str | None = None) -> EngineJob:
    return EngineJob(engine=engine, job_id="1234", state=state, reason=reason, since=NOON)


@pytest.mark.parametrize(
    ("engine_job", "now", "text"),
    [
        (
            job("slurm", "PENDING", "Resources"),
            NOON + 5,
            "slurm job 1234: PENDING (Resources) since 12:00:01 UTC (5 s ago)",
        ),
        (
            job("slurm", "RUNNING"),
            NOON + 7200,
            "slurm job 1234: RUNNING since 12:00:01 UTC (2 h ago)",
        ),
        (job("spark", "SUBMITTED"), NOON, "spark job 1234: SUBMITTED since 12:00:01 UTC (0 s ago)"),
    ],
)
def test_describe_engine_job(engine_job: EngineJob, now: float, text: str) -> None:
    assert describe_engine_job(engine_job, now) == text


@pytest.mark.parametrize(
    ("state", "engine_job", "wait"),
    [
        (
            RunState.STARTING,
            job("slurm", "PENDING", "Resources"),
            "waiting in slurm's queue: Resources",
        ),
        (RunState.STARTING, job("slurm", "PENDING"), "waiting in slurm's queue: no reason given"),
        (RunState.STARTING, job("spark", "SUBMITTED"), "waiting in spark's queue: no reason given"),
        (RunState.STARTING, job("slurm", "CONFIGURING"), None),  # its nodes are booting
        (RunState.RUNNING, job("slurm", "RUNNING"), None),
        (RunState.STARTING, None, None),  # a plain machine's run
        (RunState.CANCELED, job("slurm", "PENDING", "Resources"), None),  # over: not waiting
    ],
)
def test_engine_wait(state: RunState, engine_job: EngineJob | None, wait: str | None) -> None:
    assert engine_wait(record("r1", state, engine_job=engine_job)) == wait


@pytest.mark.parametrize(
    ("state", "engine_job", "shown"),
    [
        # v1's Queued: "the job is queued in the compute target"
        (RunState.STARTING, job("slurm", "PENDING", "Resources"), RunState.QUEUED),
        (RunState.STARTING, job("spark", "SUBMITTED"), RunState.QUEUED),
        (RunState.STARTING, job("slurm", "CONFIGURING"), RunState.STARTING),
        (RunState.STARTING, None, RunState.STARTING),
        (RunState.RUNNING, job("slurm", "RUNNING"), RunState.RUNNING),
        (RunState.CANCELED, job("slurm", "PENDING"), RunState.CANCELED),
    ],
)
def test_a_run_its_engine_holds_is_shown_queued(
    state: RunState, engine_job: EngineJob | None, shown: RunState
) -> None:
    rec = record("r1", state, engine_job=engine_job)
    assert shown_state(rec) == shown
    assert run_view(rec, {}).state == shown  # run show, the SDK's details, --output json
    assert rec.state == state  # the record is not changed: a placed run is never placed again


def test_the_progress_line_says_where_a_starting_run_waits() -> None:
    rec = record(
        "r1",
        RunState.STARTING,
        engine_job=job("slurm", "PENDING", "Priority"),
        history=[m.StateChange(state=RunState.STARTING, at=NOON, attempt=1)],
    )
    assert status_line(rec, NOON + 3).endswith("Queued (waiting in slurm's queue: Priority) 3s")


def test_the_json_view_carries_the_engine_job() -> None:
    view = run_view(
        record("r1", RunState.STARTING, engine_job=job("slurm", "PENDING", "Resources")), {}
    )
    assert view.engine_job is not None
    assert (view.engine_job.engine, view.engine_job.job_id, view.engine_job.state) == (
        "slurm",
        "1234",
        "PENDING",
    )
    assert view.engine_job.reason == "Resources" and view.engine_job.since is not None
    assert run_view(record("r2"), {}).engine_job is None
