"""Hostile bytes on every subject of a real scheduler and a real agent (real nats-server).

Every API request is answered with a readable ``bad_request`` error; heartbeats, reports,
agent commands, logs and metrics that do not decode are ignored; afterwards both daemons
are alive, the store is exactly as it was, and a normal run still completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sortie.agents.config import AgentConfig
from sortie.agents.daemon import run_agent
from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.client.client import Client, ClientError
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.scheduler.events import API_TYPES
from sortie.scheduler.reconcile import Timing
from tests.security.wire import REPLY_TYPES

AGENT = "fuzz-agent"
SAMPLES: dict[str, m.Message] = {
    "submit": m.SubmitRequest(
        spec=m.RunSpec(experiment="exp", script="t.py", snapshot_id="0" * 64),
        secret_env=m.SecretEnv(values={"TOKEN": "t"}),
    ),
    "cancel": m.CancelRequest(run_id="r1"),
    "blob": m.BlobCommit(sha256="0" * 64, nuid="0" * 64 + "-n", size=1, chunks=1),
    "why": m.WhyRequest(run_id="r1"),
    "compute": m.ComputeCreate(name="pool", cluster=m.ProcessCluster(vm_size="x", max_nodes=1)),
    "agents": m.AgentAdmin(agent_id=AGENT, action="preempt"),
    "heartbeat": m.Heartbeat(
        agent_id=AGENT,
        incarnation="spoof",
        target="local",
        hostname="h",
        capacity=m.Capacity(cpus=1, memory_mb=1),
        sent_at=0,
    ),
    "report": m.RunReport(
        agent_id=AGENT, incarnation="x", run_id="r1", attempt=1, state="Completed", at=0
    ),
    "command": m.Preempt(),
}


def payloads(seed: int, kind: Any, n: int = 40) -> list[bytes]:
    """Bytes that do not decode as ``kind``: fixed nasties, damaged and retyped samples."""
    rnd = random.Random(seed)
    out = [
        b"",
        b"\x00",
        b"{",
        b"null",
        b"[]",
        b'{"type":"\x80"}',
        b'{"type":"submit","spec":{"experiment":"\xff"}}',
        b"{" * 5000,
        b'{"type":"assign","run_id":"../../x","attempt":1e999}',
        rnd.randbytes(60_000),
    ]
    for sample in SAMPLES.values():
        good = codec.encode(sample)
        out.append(good[: rnd.randrange(1, len(good))])  # truncated
        flipped = bytearray(good)
        for _ in range(3):
            flipped[rnd.randrange(len(flipped))] = rnd.randrange(256)
        out.append(bytes(flipped))
        out.append(good.replace(b'"', b"'", 1))
        out.append(good.replace(b":", b":[", 1))  # a value of the wrong type
    while len(out) < n:
        out.append(rnd.randbytes(rnd.randrange(1, 300)))
    bad = []
    for data in out:
        try:
            codec.decode(kind, data)
        except codec.BadMessage:
            bad.append(data)
    return bad


@dataclass
class Daemons:
    scheduler: asyncio.Task[None]
    agent: asyncio.Task[None]


@pytest.fixture
async def daemons(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Daemons]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    sched = asyncio.create_task(
        run_scheduler(
            SchedulerConfig(
                url=broker.url,
                data_dir=tmp_path / "scheduler",
                timing=Timing(lease_s=3.0, assign_ack_s=2.0, kill_grace_s=1.0),
                tick_s=0.2,
            ),
            stop,
            ready,
        )
    )
    await asyncio.wait_for(ready.wait(), 15)
    agent = asyncio.create_task(
        run_agent(
            AgentConfig(
                url=broker.url,
                agent_id=AGENT,
                target="local",
                data_dir=tmp_path / "agent",
                heartbeat_interval_s=0.2,
                kill_grace_s=1.0,
                lease_s=3.0,
                docker_host=f"unix://{tmp_path}/no-engine.sock",  # never the shared engine
            ),
            stop,
        )
    )
    try:
        yield Daemons(sched, agent)
    finally:
        stop.set()
        for task in (agent, sched):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 30)


async def store(bus: Bus) -> dict[str, dict[str, tuple[int, bytes]]]:
    out = {}
    for name, kv in (
        ("runs", bus.runs),
        ("agents", bus.agents),
        ("computes", bus.computes),
        ("nodes", bus.nodes),
        ("vms", bus.vms),
        ("quarantine", await bus.js.key_value(subjects.KV_QUARANTINE)),
    ):
        out[name] = {e.key: (e.revision or 0, e.value or b"") for e in await kv_items(kv)}
    return out


async def until_agent_ready(client: Client) -> None:
    for _ in range(100):
        targets = {t.name: t.agents for t in await client.targets()}
        if targets.get("local"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the agent never registered")


async def test_hostile_bytes_on_every_subject_change_nothing(
    daemons: Daemons, broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    async with await Client.connect(broker.url) as client:
        await until_agent_ready(client)
        await asyncio.sleep(0.5)  # the agent's record is written once it is confirmed
        before = await store(bus)
        nc = bus.nc

        # request/reply: every API subject (and one the scheduler does not serve) answers
        answered = 0
        api = {**API_TYPES, f"{subjects.PREFIX}.api.nope": m.SubmitRequest}
        for i, (subject, kind) in enumerate(sorted(api.items())):
            reply_type = REPLY_TYPES.get(subject, m.SubmitReply)
            for data in payloads(i, kind):
                msg = await nc.request(subject, data, timeout=5)
                reply = codec.decode(reply_type, msg.data)
                assert isinstance(reply, m.ErrorReply), (subject, data[:80], reply)
                assert reply.code == "bad_request" and reply.message
                answered += 1
        # blob commits (served beside the API): each refused, nothing stored or quarantined
        for data in payloads(15, m.BlobCommit):
            msg = await nc.request(subjects.BLOB_COMMIT, data, timeout=5)
            reply = codec.decode(m.BlobCommitReply, msg.data)
            assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
            answered += 1
        assert answered > 100

        # one-way subjects: heartbeats (the real agent's own subject too), durable reports,
        # the agent's commands, and a run's logs and metrics
        sent = 0
        for agent_id in (AGENT, "ghost"):
            for data in payloads(10, m.Heartbeat):
                await nc.publish(subjects.heartbeat(agent_id), data)
                sent += 1
            for data in payloads(11, m.RunReport):
                await bus.js.publish(subjects.report(agent_id), data)
                sent += 1
        for data in payloads(12, m.AgentCommand):
            await nc.publish(subjects.agent_commands(AGENT), data)
            sent += 1
        for data in payloads(13, m.LogBatch):
            await bus.js.publish(subjects.logs("fuzzrun", "fuzzagent"), data)
        for data in payloads(14, m.MetricBatch):
            await bus.js.publish(subjects.metrics("fuzzrun", "fuzzagent"), data)
        await nc.flush()
        assert sent > 100
        await asyncio.sleep(2.0)  # heartbeats, reports and commands are handled

        assert not daemons.scheduler.done() and not daemons.agent.done()
        assert await store(bus) == before, "undecodable input changed the store"
        # a run without a record has no history to show (it is not a run): said so
        with pytest.raises(ClientError, match="no run 'fuzzrun'"):
            assert [line async for line in client.logs("fuzzrun")] == []
        with pytest.raises(ClientError, match="no run 'fuzzrun'"):
            await client.metrics("fuzzrun")

        # the daemons still work: a normal run goes through the same agent
        src = tmp_path / "src"
        src.mkdir()
        (src / "t.py").write_text("print('still here')\n")
        sub = await client.submit(ScriptRunConfig(source_directory=src, script="t.py"))
        rec = await asyncio.wait_for(client.wait(sub.run_id), 60)
        assert rec.state == "Completed" and rec.agent_id == AGENT, rec.error
        lines = [line.text async for _, line in client.logs(sub.run_id)]
        assert "still here" in lines

        # a damaged record in the store is an error for the client, not a crash
        await bus.runs.put("junk-run", b"\x80{not a record")
        with pytest.raises(ClientError, match="junk-run's stored record could not be read"):
            await client.get_run("junk-run")
        assert sub.run_id in [r.run_id for r in await client.list_runs()]
        why = await nc.request(subjects.API_WHY, codec.encode(m.WhyRequest(run_id="junk-run")))
        reply = codec.decode(m.WhyReplyOrError, why.data)
        assert isinstance(reply, m.ErrorReply) and "junk-run" in reply.message
        assert not daemons.scheduler.done() and not daemons.agent.done()
