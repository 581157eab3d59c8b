"""Pipelines to look at, written straight into a real broker's store as the scheduler writes them
(``RunRecord.pipeline`` on the pipeline run, its steps' statuses on it, each step that ran a
child run with ``RunRecord.step`` set), before a real scheduler starts and loads them into its
run index.

``OLD`` completed: its one step ``prep`` ran (``OLD_prep``). ``DONE`` failed: ``prep`` was
reused from ``OLD_prep``, ``train`` ran because its script changed, ``evaluate`` failed,
``report`` (after evaluate's data and lint) was skipped, and ``lint``, an independent branch
with allow_reuse off, completed. ``LIVE`` runs: ``prep`` is submitted (its run queued),
``train`` waits for its data; a test changes them while a page is open. ``seeded`` is the
daemons around them: nats-server, ``sortie scheduler`` and ``sortie web`` as processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sortie.bus.broker import free_port
from sortie.bus.connection import open_bus
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from tests.builders import record, spec
from tests.faults import Cluster, listening
from tests.web.sweep_seed import indexed, put, run_apart

OLD = "plweb_old"
DONE = "plweb_done"
LIVE = "plweb_live"
EXPERIMENT = "pipeline-web"
SEEDED_RUNS = 9  # every record below, for the scheduler's index to hold before tests start
S = p.StepState
FAILED_BECAUSE = "the script exited with code 1"
PIPELINE_FAILED = "step evaluate failed"


def step(name: str, target: str, **kw: object) -> p.StepSpec:
    run = spec(experiment=EXPERIMENT, script=f"{name}.py", target=target)
    return p.StepSpec(name=name, run=run, **kw)  # type: ignore[arg-type]


STEPS = [
    step("prep", "local", outputs=["prepped"]),
    step("train", "gpu", inputs=["prepped"], outputs=["model"]),
    step("evaluate", "local", inputs=["model", "prepped"], outputs=["scores"]),
    step("lint", "local", allow_reuse=False),
    step("report", "local", inputs=["scores"], run_after=["lint"]),
]
SPEC = p.PipelineSpec(name="train-flow", steps=STEPS, parameters={"epochs": 3})


def pipeline_record(
    run_id: str, state: RunState, pipe: p.Pipeline, at: float, error: str | None = None
) -> m.RunRecord:
    own = spec(experiment=EXPERIMENT, script=pipe.spec.name)
    ended = None if state is RunState.RUNNING else at + 60
    return record(
        run_id,
        state,
        spec=own,
        pipeline=pipe,
        created_at=at,
        started_at=at,
        ended_at=ended,
        error=None if error is None else m.RunError(kind=ErrorKind.EXIT_CODE, message=error),
    )


def step_record(
    pipeline_id: str, name: str, state: RunState, at: float, error: str | None = None
) -> m.RunRecord:
    run = next(s.run for s in STEPS if s.name == name)
    ended = None if state in (RunState.QUEUED, RunState.RUNNING) else at + 20
    return record(
        p.step_run_id(pipeline_id, name),
        state,
        spec=run,
        parent_id=pipeline_id,
        step=name,
        created_at=at,
        started_at=None if state is RunState.QUEUED else at + 1,
        ended_at=ended,
        error=None if error is None else m.RunError(kind=ErrorKind.EXIT_CODE, message=error),
    )


def done_pipeline() -> p.Pipeline:
    return p.Pipeline(
        spec=SPEC,
        parameters={"epochs": 5},
        steps={
            "prep": p.StepStatus(state=S.REUSED, run_id=f"{OLD}_prep", changed=[]),
            "train": p.StepStatus(
                state=S.COMPLETED, run_id=f"{DONE}_train", changed=["snapshot_id", "script"],
                ran_because="key changed",
            ),
            "evaluate": p.StepStatus(
                state=S.FAILED, run_id=f"{DONE}_evaluate", ran_because="no earlier run",
                reason=f"its run failed: {FAILED_BECAUSE}",
            ),
            "lint": p.StepStatus(
                state=S.COMPLETED, run_id=f"{DONE}_lint", changed=[],
                ran_because="allow_reuse is off",
            ),
            "report": p.StepStatus(state=S.SKIPPED, reason="step evaluate failed"),
        },
    )  # fmt: skip


def live_pipeline() -> p.Pipeline:
    steps = {s.name: p.StepStatus() for s in STEPS}
    steps["prep"] = p.StepStatus(
        state=S.RUNNING, run_id=f"{LIVE}_prep", ran_because="no earlier run"
    )
    return p.Pipeline(spec=SPEC, parameters={"epochs": 3}, steps=steps)


async def seed(url: str) -> None:
    bus = await open_bus(url, "seed", create=True)
    try:
        now = time.time() - 3600
        old = p.Pipeline(
            spec=p.PipelineSpec(name="train-flow", steps=STEPS[:1]),
            steps={"prep": p.StepStatus(state=S.COMPLETED, run_id=f"{OLD}_prep")},
        )
        await put(bus, pipeline_record(OLD, RunState.COMPLETED, old, now))
        await put(bus, step_record(OLD, "prep", RunState.COMPLETED, now))
        done = done_pipeline()
        await put(bus, pipeline_record(DONE, RunState.FAILED, done, now + 100, PIPELINE_FAILED))
        await put(bus, step_record(DONE, "train", RunState.COMPLETED, now + 100))
        await put(bus, step_record(DONE, "evaluate", RunState.FAILED, now + 130, FAILED_BECAUSE))
        await put(bus, step_record(DONE, "lint", RunState.COMPLETED, now + 100))
        await put(bus, pipeline_record(LIVE, RunState.RUNNING, live_pipeline(), now + 200))
        await put(bus, step_record(LIVE, "prep", RunState.QUEUED, now + 200))
        await put(bus, record("plain_run_1", RunState.COMPLETED, spec=spec(), created_at=now))
    finally:
        await bus.close()


@dataclass
class Seeded:
    cluster: Cluster
    base: str  # the dashboard (`sortie web`, open on loopback)

    @property
    def url(self) -> str:
        return self.cluster.url


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    cluster = Cluster(tmp_path_factory.mktemp("pipelines") / "c")
    cluster.start_broker()
    web = None
    try:
        run_apart(seed(cluster.url))
        cluster.start_scheduler()
        run_apart(indexed(cluster.url, SEEDED_RUNS))
        port = free_port()
        web = cluster._spawn("web", ["web", "--port", str(port), "--open-on-loopback"])
        listening(port)
        yield Seeded(cluster=cluster, base=f"http://127.0.0.1:{port}")
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        cluster.close()
