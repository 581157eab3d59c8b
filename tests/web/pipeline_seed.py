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
from pathlib import Path

import pytest

from sortie.bus.broker import free_port
from sortie.bus.connection import open_bus
from sortie.client import snapshot as snap
from sortie.client.client import Client
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


def step(snapshot: str, name: str, target: str, **kw: object) -> p.StepSpec:
    run = spec(experiment=EXPERIMENT, script=f"{name}.py", target=target, snapshot_id=snapshot)
    return p.StepSpec(name=name, run=run, **kw)  # type: ignore[arg-type]


def steps(snapshot: str) -> list[p.StepSpec]:
    return [
        step(snapshot, "prep", "local", outputs=["prepped"]),
        step(snapshot, "train", "local", inputs=["prepped"], outputs=["model"]),
        step(snapshot, "evaluate", "local", inputs=["model", "prepped"], outputs=["scores"]),
        step(snapshot, "lint", "local", allow_reuse=False),
        step(snapshot, "report", "local", inputs=["scores"], run_after=["lint"]),
    ]


def pipeline_spec(snapshot: str) -> p.PipelineSpec:
    return p.PipelineSpec(name="train-flow", steps=steps(snapshot), parameters={"epochs": 3})


def pipeline_record(
    run_id: str, state: RunState, pipe: p.Pipeline, at: float, error: str | None = None
) -> m.RunRecord:
    own = spec(
        experiment=EXPERIMENT, script=pipe.spec.name, snapshot_id=pipe.spec.steps[0].run.snapshot_id
    )
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
    pipe: p.Pipeline,
    pipeline_id: str,
    name: str,
    state: RunState,
    at: float,
    *,
    error: str | None = None,
) -> m.RunRecord:
    run = next(s.run for s in pipe.spec.steps if s.name == name)
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


def done_pipeline(snapshot: str) -> p.Pipeline:
    return p.Pipeline(
        spec=pipeline_spec(snapshot),
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


def live_pipeline(snapshot: str) -> p.Pipeline:
    spec_ = pipeline_spec(snapshot)
    statuses = {s.name: p.StepStatus() for s in spec_.steps}
    statuses["prep"] = p.StepStatus(
        state=S.RUNNING, run_id=f"{LIVE}_prep", ran_because="no earlier run"
    )
    return p.Pipeline(spec=spec_, parameters={"epochs": 3}, steps=statuses)


def source(where: Path) -> snap.SnapshotPlan:
    """The steps' source directory and its snapshot's plan (its id is its content's)."""
    where.mkdir(parents=True)
    for name in ("prep", "train", "evaluate", "lint", "report"):
        (where / f"{name}.py").write_text(f"print('{name}')\n")
    return snap.build_manifest(where)


async def upload(url: str, plan: snap.SnapshotPlan) -> None:
    """The snapshot uploaded as a client does (through the scheduler: once it runs)."""
    async with await Client.connect(url) as client:
        await client.upload_plan(plan)


async def seed(url: str, snapshot: str) -> None:
    bus = await open_bus(url, "seed", create=True)
    try:
        now = time.time() - 3600
        old = p.Pipeline(
            spec=p.PipelineSpec(name="train-flow", steps=steps(snapshot)[:1]),
            steps={"prep": p.StepStatus(state=S.COMPLETED, run_id=f"{OLD}_prep")},
        )
        await put(bus, pipeline_record(OLD, RunState.COMPLETED, old, now))
        await put(bus, step_record(old, OLD, "prep", RunState.COMPLETED, now))
        done = done_pipeline(snapshot)
        await put(bus, pipeline_record(DONE, RunState.FAILED, done, now + 100, PIPELINE_FAILED))
        await put(bus, step_record(done, DONE, "train", RunState.COMPLETED, now + 100))
        await put(
            bus,
            step_record(done, DONE, "evaluate", RunState.FAILED, now + 130, error=FAILED_BECAUSE),
        )
        await put(bus, step_record(done, DONE, "lint", RunState.COMPLETED, now + 100))
        live = live_pipeline(snapshot)
        await put(bus, pipeline_record(LIVE, RunState.RUNNING, live, now + 200))
        await put(bus, step_record(live, LIVE, "prep", RunState.QUEUED, now + 200))
        await put(bus, record("plain_run_1", RunState.COMPLETED, spec=spec(), created_at=now))
    finally:
        await bus.close()


async def start_live_prep(url: str) -> None:
    """LIVE's prep step's run starts (as its agent would report it)."""
    async with await Client.connect(url) as client:
        live = await client.get_run(LIVE)
    assert live.pipeline is not None
    bus = await open_bus(url, "test")
    try:
        await put(bus, step_record(live.pipeline, LIVE, "prep", RunState.RUNNING, time.time()))
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
    root = tmp_path_factory.mktemp("pipelines")
    cluster = Cluster(root / "c")
    cluster.start_broker()
    web = None
    try:
        plan = source(root / "src")
        run_apart(seed(cluster.url, snap.encode_manifest(plan.manifest)[0]))
        cluster.start_scheduler()
        run_apart(indexed(cluster.url, SEEDED_RUNS))
        run_apart(upload(cluster.url, plan))  # what a rerun's steps need
        port = free_port()
        web = cluster._spawn("web", ["web", "--port", str(port), "--open-on-loopback"])
        listening(port)
        yield Seeded(cluster=cluster, base=f"http://127.0.0.1:{port}")
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        cluster.close()
