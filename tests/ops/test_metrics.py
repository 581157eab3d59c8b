"""The scheduler's Prometheus metrics: the real daemon on a real broker with a simulated
agent, scraped over HTTP and read with Prometheus's own parser; and the pure half
(``scheduler.metrics.gauges``, ``Metrics.observe``) driven through the real core."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from sortie.bus.broker import BrokerProcess, free_port
from sortie.bus.connection import Bus
from sortie.bus.metrics_http import MetricsPortError
from sortie.client.client import Client
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.scheduler.metrics import Metrics, gauges
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from tests import builders as b
from tests.harness import FakeAgent
from tests.ops.scrape import Scrape, scrape


@dataclass
class CachingAgent(FakeAgent):
    """A fake agent whose heartbeats carry environment-cache totals, as real agents' do."""

    hits: int = 0
    misses: int = 0

    async def heartbeat(self) -> None:
        hb = m.Heartbeat(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            target=self.target,
            hostname="sim",
            capacity=self.capacity,
            running=[m.RunRef(run_id=r, attempt=a) for r, a in self.running.items()],
            sent_at=time.time(),
            env_cache_hits=self.hits,
            env_cache_misses=self.misses,
        )
        await self.bus.nc.publish(subjects.heartbeat(self.agent_id), codec.encode(hb))


@dataclass
class Running:
    url: str  # the metrics endpoint
    logs: list[MutableMapping[str, Any]]


@pytest.fixture
async def scheduler(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Running]:
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = SchedulerConfig(
        url=broker.url, tick_s=0.2, data_dir=tmp_path / "scheduler", metrics_port=port
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_scheduler(cfg, stop, ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            yield Running(url=f"http://127.0.0.1:{port}/metrics", logs=logs)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


async def eventually(url: str, pred: Callable[[Scrape], bool], timeout: float = 10) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        got = await scrape(url)
        if pred(got):
            return got
        if time.monotonic() > deadline:
            shown = "\n".join(
                f"{s.name}{s.labels} {s.value}" for s in got.samples if s.name.startswith("sortie_")
            )
            raise AssertionError(f"metrics never matched; last scrape:\n{shown}")
        await asyncio.sleep(0.1)


async def next_assign(agent: FakeAgent) -> m.Assign:
    while True:
        cmd = await agent.next_command()
        if isinstance(cmd, m.Assign):
            return cmd


async def test_scrape_shows_queue_runs_agents_gpus_latencies_and_counters(
    scheduler: Running, bus: Bus, tmp_path: Path
) -> None:
    url = scheduler.url
    agent = CachingAgent(
        bus,
        "a1",
        capacity=m.Capacity(cpus=2, memory_mb=4096, gpus=1, gpu_type="H100"),
        hits=3,
        misses=1,
    )
    await agent.start(interval=0.2)
    try:
        first = await eventually(
            url, lambda s: s.value("sortie_agents", target="local", state="ready") == 1
        )
        assert first.content_type.startswith("text/plain")
        assert first.types["sortie_queue_depth"] == "gauge"
        assert first.types["sortie_placement_latency_seconds"] == "histogram"
        assert first.types["sortie_runs_submitted"] == "counter"
        assert first.value("sortie_scheduler_broker_connected") == 1
        assert first.value("sortie_gpus", target="local") == 1
        assert first.value("sortie_gpus_used", target="local") == 0
        assert first.value("sortie_env_cache_hits_total", target="local") == 3
        assert first.value("sortie_env_cache_misses_total", target="local") == 1

        src = tmp_path / "src"
        src.mkdir()
        (src / "t.py").write_text("print('hello')\n" * 50)
        size = (src / "t.py").stat().st_size
        gpu = ScriptRunConfig(
            source_directory=src, script="t.py", run_config=RunConfiguration(gpus=1)
        )
        urgent = ScriptRunConfig(
            source_directory=src, script="t.py", run_config=RunConfiguration(gpus=1, priority=5)
        )
        async with await Client.connect(bus.url) as client:
            r1 = (await client.submit(gpu)).run_id
            assert (await next_assign(agent)).run_id == r1
            r2 = (await client.submit(urgent)).run_id
            await client.submit(gpu)
        await agent.report(r1, 1, RunState.STARTING)
        await agent.report(r1, 1, RunState.RUNNING)

        s = await eventually(
            url, lambda s: s.value("sortie_runs", state="Running", target="local") == 1
        )
        assert s.value("sortie_runs", state="Queued", target="local") == 2
        assert s.value("sortie_runs", state="Preparing", target="local") == 0
        assert s.value("sortie_queue_depth", target="local", priority="5") == 1
        assert s.value("sortie_queue_depth", target="local", priority="0") == 1
        assert (s.value("sortie_queue_oldest_seconds", target="local") or -1) >= 0
        assert s.value("sortie_gpus_used", target="local") == 1
        assert s.value("sortie_cpus", target="local") == 2
        assert s.value("sortie_cpus_used", target="local") == 1
        assert s.value("sortie_runs_submitted_total", target="local") == 3
        assert s.value("sortie_placement_latency_seconds_count") == 1
        assert s.value("sortie_submit_to_start_seconds_count") == 1
        assert s.value("sortie_submit_to_start_seconds_bucket", le="+Inf") == 1
        # the first submit uploaded the file; the next two found it in the store
        assert s.value("sortie_snapshot_bytes_total", kind="uploaded") == size
        assert s.value("sortie_snapshot_bytes_total", kind="deduplicated") == 2 * size
        assert (s.value("sortie_scheduler_cycle_seconds_count") or 0) > 0
        assert s.value("sortie_scheduler_events_total", kind="Submitted") == 6  # 3 validated

        # the node is preempted: r1 goes back to the queue, and r2 (priority 5) takes the GPU
        agent.hits = 5
        await agent.report(
            r1,
            1,
            RunState.QUEUED,
            error=m.RunError(kind="preempted", message="node preempted"),
        )
        assert (await next_assign(agent)).run_id == r2
        s = await eventually(url, lambda s: s.value("sortie_placement_latency_seconds_count") == 2)
        assert s.value("sortie_run_requeues_total", target="local", reason="preempted") == 1
        assert s.value("sortie_run_preemptions_total", target="local") == 1
        s = await eventually(  # the next heartbeat carries the new total
            url, lambda s: s.value("sortie_env_cache_hits_total", target="local") == 5
        )
        assert s.value("sortie_env_cache_misses_total", target="local") == 1

        for state in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
            await agent.report(r2, 1, state)
        await agent.report(r2, 1, RunState.COMPLETED, exit_code=0)
        s = await eventually(
            url,
            lambda s: s.value("sortie_runs_ended_total", target="local", state="Completed") == 1,
        )
        assert s.value("sortie_submit_to_start_seconds_count") == 2
        assert (
            s.total("sortie_runs", state="Queued") + s.total("sortie_runs", state="Preparing") == 2
        )
    finally:
        await agent.stop()

    # one canonical line per cycle: info when it changed something, debug when idle
    def placed() -> int:
        return sum(int(str(e["placed"])) for e in scheduler.logs if e["event"] == "cycle")

    for _ in range(100):  # the cycle that placed the third run logs once it is done
        if placed() >= 3:
            break
        await asyncio.sleep(0.05)
    assert placed() == 3
    cycles = [e for e in scheduler.logs if e["event"] == "cycle"]
    assert cycles, "no cycle lines logged"
    busy = [e for e in cycles if e["log_level"] == "info"]
    idle = [e for e in cycles if e["log_level"] == "debug"]
    assert busy and idle
    assert all(e["changed"] or e["scaled"] or e["conflicts"] for e in busy)
    assert not any(e["changed"] or e["scaled"] for e in idle)
    assert all(isinstance(e["ms"], float) for e in cycles)
    assert not [e for e in scheduler.logs if e["event"] == "placed"]  # folded into "cycle"


async def test_healthz_and_index(scheduler: Running) -> None:
    import urllib.request

    base = scheduler.url.removesuffix("/metrics")

    def get(path: str) -> str:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return str(resp.read().decode())

    assert await asyncio.to_thread(get, "/healthz") == "ok\n"
    assert "/metrics" in await asyncio.to_thread(get, "/")


async def test_a_busy_metrics_port_is_a_clear_error(broker: BrokerProcess, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = SchedulerConfig(url=broker.url, data_dir=tmp_path / "s", metrics_port=port)
        with pytest.raises(MetricsPortError, match=f"127.0.0.1:{port}.*--metrics-port"):
            await asyncio.wait_for(run_scheduler(cfg, asyncio.Event()), 10)


def test_no_metrics_served_unless_asked() -> None:
    assert SchedulerConfig(url="nats://x").metrics_port is None


# --- the pure half, through the real core ---------------------------------------------------


class Driver:
    """The daemon's cycle without I/O: handle, decide, observe, then 'store' what changed."""

    def __init__(self) -> None:
        self.state = SchedulerState()
        # agents heartbeat only when a test says so: never judge them lost here
        self.config = core.Config(timing=Timing(lease_s=1e9, assign_ack_s=1e9))
        self.metrics = Metrics(lambda: self.state, clock=lambda: self.now)
        self.now = 1000.0
        self.n = 0

    def cycle(self, *events: core.Event, dt: float = 1.0) -> None:
        self.now += dt
        for e in events:
            core.handle(self.state, e, self.now, self.config)
        core.decide(self.state, self.now, self.config)
        self.metrics.observe(events, self.state, self.now)
        for run_id, _ in self.state.runs.take_changes().written:
            core.forget_finished(self.state, run_id)

    def submit(self, **spec: object) -> str:
        self.n += 1
        run_id = f"r{self.n}"
        request = m.SubmitRequest(spec=b.spec(**spec), uploaded_bytes=10)
        self.cycle(core.Submitted(request=request, run_id=run_id, reply_to=""))
        return run_id

    def report(self, run_id: str, state: RunState, agent: str = "a1", **kw: object) -> None:
        rec = self.state.runs[run_id]
        rep = m.RunReport(
            agent_id=agent,
            incarnation="i1",
            run_id=run_id,
            attempt=rec.attempt,
            state=state,
            at=self.now,
            **kw,
        )
        self.cycle(core.ReportSeen(report=rep))

    def sample(self, name: str, **labels: str) -> float | None:
        value = self.metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)


def test_gauges_from_a_state() -> None:
    d = Driver()
    d.cycle(core.HeartbeatSeen(heartbeat=b.heartbeat("a1", cpus=4, gpus=2)))
    d.cycle(core.HeartbeatSeen(heartbeat=b.heartbeat("a2", target="gpu", cpus=8, gpus=4)))
    d.state.agents["a2"].cordoned = True
    placed = d.submit(resources=m.Resources(cpus=2, gpus=1), snapshot_bytes=100)
    waiting = d.submit(target="gpu", priority=3)
    g = gauges(d.state, d.now + 5)
    assert d.state.runs[placed].state is RunState.PREPARING
    assert g.queue == {("gpu", 3): 1}
    assert g.oldest_queued_s == {"gpu": 5.0}
    assert g.runs[("Preparing", "local")] == 1
    assert g.runs[("Queued", "gpu")] == 1
    assert g.runs[("Running", "local")] == 0
    assert g.agents[("local", "ready")] == 1
    assert g.agents[("gpu", "cordoned")] == 1
    assert g.agents[("gpu", "lost")] == 0
    assert g.gpus == {"local": (2, 1), "gpu": (4, 0)}
    assert g.cpus == {"local": (4.0, 2.0), "gpu": (8.0, 0.0)}
    assert g.broker_connected
    assert waiting in d.state.runs


def test_counters_follow_runs_through_their_lives() -> None:
    d = Driver()
    d.cycle(core.HeartbeatSeen(heartbeat=b.heartbeat("a1", cpus=1)))
    r1 = d.submit(snapshot_bytes=100, max_retries=1)
    assert d.sample("sortie_runs_submitted_total", target="local") == 1
    assert d.sample("sortie_snapshot_bytes_total", kind="uploaded") == 10
    assert d.sample("sortie_snapshot_bytes_total", kind="deduplicated") == 90
    assert d.sample("sortie_placement_latency_seconds_count") == 1
    d.report(r1, RunState.STARTING)
    d.report(r1, RunState.RUNNING)
    assert d.sample("sortie_submit_to_start_seconds_count") == 1
    assert d.sample("sortie_submit_to_start_seconds_sum") == 1.0  # the Running report: t+1
    # a failure with a retry left: requeued (reason retry), placed again, started again
    d.report(r1, RunState.FAILED, exit_code=1, error=m.RunError(kind="exit_code", message="1"))
    assert d.state.runs[r1].attempt == 2
    assert d.sample("sortie_run_requeues_total", target="local", reason="retry") == 1
    d.cycle()  # placed again
    assert d.sample("sortie_placement_latency_seconds_count") == 2
    d.report(r1, RunState.STARTING)
    d.report(r1, RunState.RUNNING)
    assert d.sample("sortie_submit_to_start_seconds_count") == 1  # once per run
    d.report(r1, RunState.QUEUED, error=m.RunError(kind="preempted", message="p"))
    assert d.sample("sortie_run_requeues_total", target="local", reason="preempted") == 1
    assert d.sample("sortie_run_preemptions_total", target="local") == 1
    d.cycle()
    d.report(r1, RunState.STARTING)
    d.report(r1, RunState.QUEUED, error=m.RunError(kind="lost", message="cut off"))
    assert d.sample("sortie_run_requeues_total", target="local", reason="lost") == 1
    d.cycle()
    for state in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
        d.report(r1, state)
    d.report(r1, RunState.COMPLETED, exit_code=0)
    assert d.sample("sortie_runs_ended_total", target="local", state="Completed") == 1
    assert r1 not in d.state.runs
    # a queued run canceled ends Canceled
    d.state.agents["a1"].cordoned = True
    r2 = d.submit()
    assert d.state.runs[r2].state is RunState.QUEUED
    d.cycle(core.CancelAsked(run_id=r2, reply_to=""))
    assert d.sample("sortie_runs_ended_total", target="local", state="Canceled") == 1


def test_env_cache_counts_rises_and_survives_agent_restarts() -> None:
    d = Driver()

    def beat(incarnation: str, hits: int, misses: int) -> None:
        hb = m.Heartbeat(
            agent_id="a1",
            incarnation=incarnation,
            target="local",
            hostname="h",
            capacity=b.capacity(),
            sent_at=0.0,
            env_cache_hits=hits,
            env_cache_misses=misses,
        )
        d.cycle(core.HeartbeatSeen(heartbeat=hb))

    beat("i1", 2, 1)
    beat("i1", 2, 1)  # unchanged totals count nothing
    beat("i1", 4, 1)
    beat("i2", 1, 0)  # restarted: its totals began again from 0
    assert d.sample("sortie_env_cache_hits_total", target="local") == 5
    assert d.sample("sortie_env_cache_misses_total", target="local") == 1


def test_loaded_runs_count_nothing_they_did_before() -> None:
    d = Driver()
    d.cycle(core.HeartbeatSeen(heartbeat=b.heartbeat("a1", running=[("old", 3)])))
    rec = b.record(
        "old",
        RunState.RUNNING,
        attempt=3,
        started_at=5.0,
        agent_id="a1",
        agent_incarnation="i1",
        gang=[m.GangMember(rank=0, agent_id="a1", incarnation="i1", state=RunState.RUNNING)],
    )
    d.state.runs.load("old", rec)  # found in the store at start
    d.metrics.seed(d.state)
    d.report("old", RunState.FINALIZING)
    assert d.sample("sortie_submit_to_start_seconds_count") == 0
    assert d.sample("sortie_run_requeues_total", target="local", reason="lost") is None


def test_autoscaler_decisions_are_counted_once() -> None:
    d = Driver()
    compute = m.ComputeRecord(
        name="pool",
        cluster=m.ProcessCluster(vm_size="S", max_nodes=2),
        shape=m.NodeShape(name="S", cpus=4, memory_mb=8192),
        created_at=0.0,
    )
    d.state.computes.put("pool", compute)
    ids = iter(f"pool-{i}" for i in range(10))
    d.now += 1
    core.decide(d.state, d.now, d.config, lambda _: next(ids))
    d.state.runs.put("q", b.record("q", spec=b.spec(target="pool"), created_at=d.now))
    d.now += 1
    core.decide(d.state, d.now, d.config, lambda _: next(ids))
    d.metrics.observe([], d.state, d.now)
    assert d.sample("sortie_autoscaler_actions_total", cluster="pool", action="scale_up") == 1
    d.metrics.observe([], d.state, d.now + 1)  # a later cycle: the same decision is not new
    assert d.sample("sortie_autoscaler_actions_total", cluster="pool", action="scale_up") == 1
    g = gauges(d.state, d.now)
    assert g.nodes[("pool", "current")] == 1
    assert g.nodes[("pool", "target")] == 1
    assert g.nodes[("pool", "idle")] == 0


def test_each_scheduler_has_its_own_registry() -> None:
    a, b2 = Metrics(SchedulerState), Metrics(SchedulerState)
    a.submitted.labels(target="x").inc()
    assert a.registry.get_sample_value("sortie_runs_submitted_total", {"target": "x"}) == 1
    assert b2.registry.get_sample_value("sortie_runs_submitted_total", {"target": "x"}) is None
