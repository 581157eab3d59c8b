"""Each role's NATS permissions, proven with real connections to a real nats-server.

Every denial is shown twice: the broker's own refusal on the connection ("Permissions
Violation ...") and the absence of its effect (nothing delivered, nothing stored).
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from sortie.bus.blobs import get_blob, put_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.proto import subjects
from tests.security.auth_fixtures import Connections
from tests.security.auth_fixtures import authority as authority  # the fixtures, shared
from tests.security.auth_fixtures import connections as connections
from tests.security.auth_fixtures import scheduler_bus as scheduler_bus
from tests.security.auth_fixtures import secure_broker as secure_broker

QUIET_S = 0.5  # how long "nothing arrives" is watched for


def refused(nc: NATS, what: str, subject: str) -> bool:
    """Did the broker refuse ``what`` ("publish", "subscription") on ``subject``? (nats-py
    lowercases the server's error.)"""
    return f'permissions violation for {what} to "{subject}"'.lower() in str(nc.last_error)


async def until_refused(nc: NATS, what: str, subject: str) -> None:
    """Wait for the broker's refusal (it is not ordered with other replies, e.g. a PONG)."""
    for _ in range(500):
        if refused(nc, what, subject):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no refusal of {what} to {subject!r}; last error: {nc.last_error}")


async def publish_refused(nc: NATS, subject: str, data: bytes = b"x") -> None:
    await nc.publish(subject, data)
    await until_refused(nc, "publish", subject)


async def subscribe_refused(nc: NATS, subject: str, queue: str = "") -> Subscription:
    sub = await nc.subscribe(subject, queue=queue)
    await until_refused(nc, "subscription", subject)
    return sub


async def nothing_arrives(sub: Subscription) -> None:
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=QUIET_S)


# --- agents ------------------------------------------------------------------------------------


async def test_an_agent_receives_its_own_commands_and_no_other_agents(
    connections: Connections, scheduler_bus: Bus
) -> None:
    a = await connections.agent("agent-a")
    b = await connections.agent("agent-b")
    own = await a.nc.subscribe(subjects.agent_commands("agent-a"))
    b_own = await b.nc.subscribe(subjects.agent_commands("agent-b"))
    stolen = await subscribe_refused(a.nc, subjects.agent_commands("agent-b"))
    wildcard = await subscribe_refused(a.nc, f"{subjects.PREFIX}.agent.*.cmd")
    await b.nc.flush()

    await scheduler_bus.nc.publish(subjects.agent_commands("agent-a"), b"for a")
    await scheduler_bus.nc.publish(subjects.agent_commands("agent-b"), b"for b")
    assert (await own.next_msg(timeout=5)).data == b"for a"
    assert (await b_own.next_msg(timeout=5)).data == b"for b"
    await nothing_arrives(stolen)
    await nothing_arrives(wildcard)


async def test_an_agent_gets_its_own_image_queries_and_answers_only_as_itself(
    connections: Connections, scheduler_bus: Bus
) -> None:
    """The scheduler asks one agent which image a tag names: only that agent hears it, and
    an answer under another agent's id never reaches the scheduler."""
    a = await connections.agent("agent-a")
    queries = await a.nc.subscribe(subjects.agent_images("agent-a"))
    stolen = await subscribe_refused(a.nc, subjects.agent_images("agent-b"))
    answers = await scheduler_bus.nc.subscribe(f"{subjects.PREFIX}.images.>")
    await scheduler_bus.nc.flush()
    await a.nc.flush()

    reply = subjects.image_answer("agent-a", "q1")
    await scheduler_bus.nc.publish(subjects.agent_images("agent-a"), b"which?", reply=reply)
    await scheduler_bus.nc.publish(subjects.agent_images("agent-b"), b"for b")
    got = await queries.next_msg(timeout=5)
    assert (got.data, got.reply) == (b"which?", reply)
    await nothing_arrives(stolen)

    await a.nc.publish(got.reply, b"own answer")
    await publish_refused(a.nc, subjects.image_answer("agent-b", "q1"), b"forged")
    seen = await answers.next_msg(timeout=5)
    assert (seen.subject, seen.data) == (reply, b"own answer")
    await nothing_arrives(answers)


async def test_an_agent_publishes_only_its_own_heartbeats_and_reports(
    connections: Connections, scheduler_bus: Bus
) -> None:
    seen = await scheduler_bus.nc.subscribe(subjects.HEARTBEATS_ALL)
    await scheduler_bus.nc.flush()
    a = await connections.agent("agent-a")

    await a.nc.publish(subjects.heartbeat("agent-a"), b"alive")
    await publish_refused(a.nc, subjects.heartbeat("agent-b"), b"forged")
    got = await seen.next_msg(timeout=5)
    assert (got.subject, got.data) == (subjects.heartbeat("agent-a"), b"alive")
    await nothing_arrives(seen)

    ack = await a.js.publish(subjects.report("agent-a"), b"own report")
    assert ack.stream == subjects.STREAM_REPORTS
    await publish_refused(a.nc, subjects.report("agent-b"), b"forged report")
    with pytest.raises(nats.js.errors.NotFoundError):
        await scheduler_bus.js.get_last_msg(subjects.STREAM_REPORTS, subjects.report("agent-b"))
    kept = await scheduler_bus.js.get_last_msg(subjects.STREAM_REPORTS, subjects.report("agent-a"))
    assert kept.data == b"own report"


async def test_an_agent_cannot_answer_api_requests_or_read_other_replies(
    connections: Connections,
) -> None:
    a = await connections.agent("agent-a")
    await subscribe_refused(a.nc, subjects.API_ALL, queue=subjects.SCHEDULER_QUEUE)
    await subscribe_refused(a.nc, subjects.API_SUBMIT)
    await subscribe_refused(a.nc, f"{subjects.INBOX}.>")
    await subscribe_refused(a.nc, f"{subjects.agent_inbox('agent-b')}.>")
    await subscribe_refused(a.nc, f"{subjects.CLIENT_INBOX}.>")
    # its own replies still arrive, on its own inbox: a JetStream request is answered
    assert a.nc.new_inbox().startswith(f"{subjects.agent_inbox('agent-a')}.")
    info = await a.js.stream_info(subjects.STREAM_REPORTS)
    assert info.config.name == subjects.STREAM_REPORTS


async def test_an_agent_cannot_write_or_read_records(
    connections: Connections, scheduler_bus: Bus
) -> None:
    await scheduler_bus.runs.put("run_1_abc", b"the record")
    a = await connections.agent("agent-a")
    js = a.nc.jetstream(timeout=1.0)
    runs = await js.key_value(subjects.KV_RUNS)
    with pytest.raises(nats.errors.TimeoutError):
        await runs.put("run_1_abc", b"forged record")
    await until_refused(a.nc, "publish", f"$KV.{subjects.KV_RUNS}.run_1_abc")
    with pytest.raises(nats.errors.TimeoutError):
        await runs.get("run_1_abc")
    await publish_refused(a.nc, f"$KV.{subjects.KV_AGENTS}.agent-a", b"{}")
    entry = await scheduler_bus.runs.get("run_1_abc")
    assert entry.value == b"the record"


async def test_an_agent_fetches_snapshots_uploads_outputs_and_streams_logs(
    connections: Connections, scheduler_bus: Bus
) -> None:
    a = await connections.agent("agent-a")
    snapshot = b"print('hello')\n"
    await put_blob(scheduler_bus.blobs, sha256_bytes(snapshot), snapshot)
    assert await get_blob(a.blobs, sha256_bytes(snapshot)) == snapshot
    output = b"weights"
    await put_blob(a.blobs, sha256_bytes(output), output)
    assert await get_blob(scheduler_bus.blobs, sha256_bytes(output)) == output
    ack = await a.js.publish(subjects.logs("run_1_abc", "agent-a"), b"line")
    assert ack.stream == subjects.STREAM_LOGS
    ack = await a.js.publish(subjects.metrics("run_1_abc", "agent-a"), b"{}")
    assert ack.stream == subjects.STREAM_METRICS


async def test_an_agent_writes_logs_and_metrics_under_its_own_id_only(
    connections: Connections,
) -> None:
    a = await connections.agent("agent-a")
    for subject in (
        subjects.logs("run_1_abc", "agent-b"),
        subjects.metrics("run_1_abc", "agent-b"),
        subjects.logs("run_1_abc", subjects.SCHEDULER_WRITER),
        subjects.legacy_logs("run_1_abc"),
        subjects.legacy_metrics("run_1_abc"),
    ):
        await publish_refused(a.nc, subject, b"forged")


# --- clients -----------------------------------------------------------------------------------


async def test_a_client_cannot_act_as_an_agent(connections: Connections) -> None:
    c = await connections.client()
    await publish_refused(c.nc, subjects.heartbeat("agent-a"), b"forged")
    await publish_refused(c.nc, subjects.report("agent-a"), b"forged")
    await publish_refused(c.nc, subjects.agent_commands("agent-a"), b"forged")
    await publish_refused(c.nc, subjects.logs("run_1_abc", "agent-a"), b"forged")
    await subscribe_refused(c.nc, subjects.agent_commands("agent-a"))
    await subscribe_refused(c.nc, subjects.HEARTBEATS_ALL)


async def test_a_client_cannot_act_as_the_scheduler(
    connections: Connections, scheduler_bus: Bus
) -> None:
    await scheduler_bus.runs.put("run_1_abc", b"the record")
    c = await connections.client()
    await subscribe_refused(c.nc, subjects.API_ALL, queue=subjects.SCHEDULER_QUEUE)
    await subscribe_refused(c.nc, f"{subjects.SCHEDULER_INBOX}.>")
    with pytest.raises(nats.errors.TimeoutError):
        await c.nc.jetstream(timeout=1.0).delete_stream(subjects.kv_stream(subjects.KV_RUNS))
    with pytest.raises(nats.errors.TimeoutError):
        await c.nc.jetstream(timeout=1.0).purge_stream(subjects.STREAM_REPORTS)
    runs = await c.nc.jetstream(timeout=1.0).key_value(subjects.KV_RUNS)
    with pytest.raises(nats.errors.TimeoutError):
        await runs.put("run_1_abc", b"forged record")
    with pytest.raises(nats.errors.TimeoutError):
        await runs.delete("run_1_abc")
    assert (await scheduler_bus.runs.get("run_1_abc")).value == b"the record"
    await scheduler_bus.js.stream_info(subjects.kv_stream(subjects.KV_RUNS))  # still there


async def test_a_client_submits_reads_runs_and_logs_and_moves_blobs(
    connections: Connections, scheduler_bus: Bus
) -> None:
    async def answer(msg: object) -> None:
        await msg.respond(b"accepted")

    await scheduler_bus.nc.subscribe(subjects.API_ALL, queue=subjects.SCHEDULER_QUEUE, cb=answer)
    await scheduler_bus.nc.flush()
    await scheduler_bus.runs.put("run_1_abc", b"the record")
    await scheduler_bus.js.publish(subjects.logs("run_1_abc", "agent-a"), b"a line")
    c = await connections.client()

    reply = await c.nc.request(subjects.API_SUBMIT, b"{}", timeout=5)
    assert reply.data == b"accepted"
    assert reply.subject.startswith(f"{subjects.CLIENT_INBOX}.")
    assert (await c.runs.get("run_1_abc")).value == b"the record"
    assert [e.key for e in await kv_items(c.runs)] == ["run_1_abc"]
    watcher = await c.runs.watch("run_1_abc")
    try:
        first = await watcher.updates(timeout=5)
        assert first.value == b"the record"
    finally:
        await watcher.stop()
    sub = await c.js.subscribe(
        subjects.run_logs("run_1_abc"), stream=subjects.STREAM_LOGS, ordered_consumer=True
    )
    assert (await sub.next_msg(timeout=5)).data == b"a line"
    source = b"import this\n"
    await put_blob(c.blobs, sha256_bytes(source), source)
    assert await get_blob(scheduler_bus.blobs, sha256_bytes(source)) == source


async def test_a_client_reads_registered_models_and_cannot_write_them(
    connections: Connections, scheduler_bus: Bus
) -> None:
    key = subjects.model_key("digits", 1)
    await (await scheduler_bus.js.key_value(subjects.KV_MODELS)).create(key, b"the version")
    c = await connections.client()
    models = await c.nc.jetstream(timeout=1.0).key_value(subjects.KV_MODELS)
    assert (await models.get(key)).value == b"the version"
    assert [e.key for e in await kv_items(models)] == [key]
    with pytest.raises(nats.errors.TimeoutError):
        await models.put(key, b"forged version")
    await until_refused(c.nc, "publish", f"$KV.{subjects.KV_MODELS}.{key}")
    with pytest.raises(nats.errors.TimeoutError):
        await models.create(subjects.model_key("digits", 2), b"forged")
    stored = await scheduler_bus.js.key_value(subjects.KV_MODELS)
    assert (await stored.get(key)).value == b"the version"
    assert [e.key for e in await kv_items(stored)] == [key]


async def test_a_client_reads_dashboard_token_hashes_and_cannot_write_them(
    connections: Connections, scheduler_bus: Bus
) -> None:
    key = "ab" * 32  # a token's SHA-256, hex
    await (await scheduler_bus.js.key_value(subjects.KV_WEB_TOKENS)).create(key, b"a token")
    c = await connections.client()
    tokens = await c.nc.jetstream(timeout=1.0).key_value(subjects.KV_WEB_TOKENS)
    assert [e.key for e in await kv_items(tokens)] == [key]  # what the dashboard watches
    with pytest.raises(nats.errors.TimeoutError):
        await tokens.put("cd" * 32, b"a forged token")
    await until_refused(c.nc, "publish", f"$KV.{subjects.KV_WEB_TOKENS}.{'cd' * 32}")
    with pytest.raises(nats.errors.TimeoutError):
        await tokens.delete(key)
    stored = await scheduler_bus.js.key_value(subjects.KV_WEB_TOKENS)
    assert [e.key for e in await kv_items(stored)] == [key]
