"""Sweeps to look at, written straight into a real broker's store as the scheduler writes them
(``RunRecord.sweep`` on the sweep, ``RunRecord.trial`` on each trial, the trials' metric points
on their own subjects), before a real scheduler starts and loads them into its run index.

``DONE`` ended: four trials (one completed best, one completed, one stopped by its policy,
one failed). ``LIVE`` is queued, has issued three trials and holds two ended ones: a test
writes the third (index 2) while a page is open. ``seeded`` is the daemons around them:
nats-server, ``sortie scheduler`` and ``sortie web`` as processes (``tests/faults.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import pytest

from sortie.bus.broker import free_port
from sortie.bus.connection import Bus, open_bus
from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from tests.builders import record, spec
from tests.faults import Cluster, listening

T = TypeVar("T")

DONE = "hdweb_done"
LIVE = "hdweb_live"
EXPERIMENT = "sweep-web"
AGENT = "sim1"
SECRET = "s3cr3t-never-on-a-page"  # the trials' template names API_KEY; no record holds this
STOPPED = "bandit at interval 3: 0.3 is outside slack 0.1 of the best (0.91)"

SPEC = sw.SweepSpec(
    space={
        "learning_rate": sw.Uniform(min_value=0.001, max_value=0.1),
        "optimizer": sw.Choice(values=["sgd", "adam"]),
    },
    sampling=sw.RandomSampling(seed=11),
    policy=sw.Bandit(slack_factor=0.1, evaluation_interval=1, delay_evaluation=2),
    primary_metric="accuracy",
    goal="maximize",
    max_total_trials=4,
    max_concurrent_trials=2,
)

# index -> (state, params, accuracy reports, error)
TRIALS: dict[int, tuple[RunState, dict[str, sw.ParamValue], list[float], m.RunError | None]] = {
    0: (RunState.COMPLETED, {"learning_rate": 0.01, "optimizer": "sgd"}, [0.4, 0.55, 0.62], None),
    1: (RunState.COMPLETED, {"learning_rate": 0.05, "optimizer": "adam"}, [0.5, 0.8, 0.91], None),
    2: (
        RunState.CANCELED,
        {"learning_rate": 0.09, "optimizer": "sgd"},
        [0.1, 0.2, 0.3],
        m.RunError(kind=ErrorKind.EARLY_TERMINATED, message=STOPPED),
    ),
    3: (
        RunState.FAILED,
        {"learning_rate": 0.002, "optimizer": "adam"},
        [],
        m.RunError(kind=ErrorKind.EXIT_CODE, message="the script exited with code 1"),
    ),
}

# LIVE's first two trials ended; its third (index 2) is written by a test while a page is open
LIVE_TRIALS = {
    0: (RunState.COMPLETED, [0.3, 0.5], None),
    1: (RunState.CANCELED, [0.2], m.RunError(kind=ErrorKind.EARLY_TERMINATED, message=STOPPED)),
}


def template() -> m.RunSpec:
    return spec(
        experiment=EXPERIMENT,
        env_vars={"PLAIN": "visible-value"},
        secret_env_names=["API_KEY"],
    )


def trial_record(
    sweep_id: str,
    index: int,
    state: RunState,
    params: dict[str, sw.ParamValue],
    reports: list[float],
    *,
    error: m.RunError | None = None,
    at: float = 0.0,
) -> m.RunRecord:
    objective = max(reports) if reports else None
    return record(
        sw.trial_run_id(sweep_id, index),
        state,
        spec=msgspec.structs.replace(template(), arguments=sw.trial_arguments(params)),
        parent_id=sweep_id,
        trial=sw.Trial(index=index, params=params, objective=objective, intervals=len(reports)),
        error=error,
        created_at=at + index,
        started_at=at + index + 0.5,
        ended_at=None if state is RunState.RUNNING else at + index + 30,
        agent_id=AGENT,
        writers=[m.Writer(attempt=1, rank=0, agent_id=AGENT)],
    )


async def put(bus: Bus, rec: m.RunRecord) -> None:
    await bus.runs.put(rec.run_id, codec.encode(rec))


async def report(bus: Bus, run_id: str, values: list[float], first: int = 0) -> None:
    """The trial's agent's metric batch: ``values`` of the primary metric (and a loss)."""
    points = []
    for i, v in enumerate(values):
        points.append(m.MetricPoint(name="accuracy", value=v, t=time.time(), step=first + i))
        points.append(m.MetricPoint(name="loss", value=1 - v, t=time.time(), step=first + i))
    batch = m.MetricBatch(run_id=run_id, attempt=1, points=points)
    await bus.js.publish(subjects.metrics(run_id, AGENT), codec.encode(batch))


async def seed(url: str) -> None:
    bus = await open_bus(url, "seed", create=True)
    try:
        now = time.time() - 3600
        done = sw.Sweep(
            spec=SPEC,
            issued=4,
            best_run_id=sw.trial_run_id(DONE, 1),
            best_objective=0.91,
            ended_because="max_total_trials reached",
        )
        await put(
            bus,
            record(DONE, RunState.COMPLETED, spec=template(), sweep=done, created_at=now,
                   started_at=now, ended_at=now + 120),
        )  # fmt: skip
        for index, (state, params, reports, error) in TRIALS.items():
            rec = trial_record(DONE, index, state, params, reports, error=error, at=now)
            await put(bus, rec)
            if reports:
                await report(bus, rec.run_id, reports)
        live = sw.Sweep(
            spec=SPEC, issued=3, best_run_id=sw.trial_run_id(LIVE, 0), best_objective=0.5
        )
        for index, (state, reports, error) in LIVE_TRIALS.items():
            params = TRIALS[index][1]
            rec = trial_record(LIVE, index, state, params, reports, error=error, at=now + 60)
            await put(bus, rec)
            await report(bus, rec.run_id, reports)
        await put(
            bus, record(LIVE, RunState.QUEUED, spec=template(), sweep=live, created_at=now + 60)
        )
        await put(bus, record("plain_run_1", RunState.COMPLETED, spec=template(), created_at=now))
    finally:
        await bus.close()


async def indexed(url: str, runs: int = 9) -> None:
    """Once the scheduler answers with the seeded ``runs`` in its index (bounded)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            async with await Client.connect(url) as client:
                _, page = await client.query_runs(q.RunQuery(limit=1))
                if page.total >= runs:
                    return
        except Exception:  # noqa: BLE001 - the scheduler is still starting: ask again
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the scheduler did not answer with the seeded runs")
        await asyncio.sleep(0.3)


def run_apart(work: Coroutine[Any, Any, T]) -> T:
    """``work`` on an event loop of its own thread (Playwright's may be running on this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@dataclass
class Seeded:
    cluster: Cluster
    base: str  # the dashboard (`sortie web`, open on loopback)

    @property
    def url(self) -> str:
        return self.cluster.url


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    cluster = Cluster(tmp_path_factory.mktemp("sweeps") / "c")
    cluster.start_broker()
    web = None
    try:
        run_apart(seed(cluster.url))
        cluster.start_scheduler()
        run_apart(indexed(cluster.url))
        port = free_port()
        web = cluster._spawn("web", ["web", "--port", str(port), "--open-on-loopback"])
        listening(port)
        yield Seeded(cluster=cluster, base=f"http://127.0.0.1:{port}")
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        cluster.close()
