"""Blobs are written once, by the scheduler, after it checked the hash: proven with real client
and agent connections to a real nats-server with authentication, and a scheduler's commits.

Every attack is followed by what a later honest reader sees: the right bytes.
"""

from __future__ import annotations

import dataclasses
import json

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from sortie.bus.blobs import (
    BlobError,
    BlobStore,
    blob_entry,
    get_blob,
    has_blob,
    put_blob,
    sha256_bytes,
    staging_nuid,
)
from sortie.bus.connection import Bus
from sortie.bus.resources import ensure_resources
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from tests.security.auth_fixtures import Connections
from tests.security.auth_fixtures import authority as authority  # the fixtures, shared
from tests.security.auth_fixtures import connections as connections
from tests.security.auth_fixtures import scheduler_bus as scheduler_bus
from tests.security.auth_fixtures import secure_broker as secure_broker
from tests.security.test_permissions import until_refused

EMPTY = sha256_bytes(b"")
STREAM = subjects.obj_stream(subjects.OBJ_BLOBS)


async def _stage(bus: Bus, sha: str, chunks: list[bytes], unique: str = "x") -> m.BlobCommit:
    """Publish chunks for ``sha`` as an uploader does, whatever their bytes."""
    nuid = staging_nuid(sha, unique)
    for c in chunks:
        await bus.js.publish(bus.blobs.chunk_subject(nuid), c)
    return m.BlobCommit(sha256=sha, nuid=nuid, size=sum(map(len, chunks)), chunks=len(chunks))


async def _commit(bus: Bus, commit: m.BlobCommit) -> m.BlobCommitReply:
    msg = await bus.nc.request(subjects.BLOB_COMMIT, codec.encode(commit), timeout=10)
    reply: m.BlobCommitReply = codec.decode(m.BlobCommitReply, msg.data)
    return reply


async def _quarantined(scheduler_bus: Bus, sha: str) -> m.QuarantinedBlob:
    kv = await scheduler_bus.js.key_value(subjects.KV_QUARANTINE)
    entry = await kv.get(sha)
    assert entry.value is not None
    return codec.decode(m.QuarantinedBlob, entry.value)


async def _overwrite_refused(nc: NATS, blobs: BlobStore, sha: str) -> None:
    """Every way a nats client writes or deletes an object fails for ``sha``."""
    js = nc.jetstream(timeout=1.0)
    store = await js.object_store(subjects.OBJ_BLOBS)
    with pytest.raises(nats.errors.TimeoutError):
        await store.put(sha, b"garbage")
    with pytest.raises(nats.errors.TimeoutError):
        await store.delete(sha)
    await nc.publish(blobs.meta_subject(sha), b'{"deleted": true}')
    await until_refused(nc, "publish", blobs.meta_subject(sha))
    # a rollup on a chunk subject would purge the blob's chunks (or the whole store)
    info, _ = await blob_entry(blobs, sha) or pytest.fail("no entry")
    for rollup in ("sub", "all"):
        with pytest.raises(nats.js.errors.Error):
            await js.publish(blobs.chunk_subject(info.nuid), b"x", headers={"Nats-Rollup": rollup})


async def test_a_client_can_neither_overwrite_nor_delete_a_blob(
    connections: Connections, scheduler_bus: Bus
) -> None:
    c = await connections.client()
    manifest = b'{"files": []} a manifest'
    artifact = b"an artifact" * 200_000  # 17 chunks: read streamed, not chunk by chunk
    for data in (manifest, artifact):
        await put_blob(c.blobs, sha256_bytes(data), data)
    for data in (manifest, artifact):
        await _overwrite_refused(c.nc, c.blobs, sha256_bytes(data))
    # chunks appended to a stored blob's subject are not part of it
    info, _ = await blob_entry(c.blobs, sha256_bytes(artifact)) or pytest.fail("no entry")
    await c.js.publish(c.blobs.chunk_subject(info.nuid), b"appended garbage")
    for data in (manifest, artifact):
        assert await get_blob(scheduler_bus.blobs, sha256_bytes(data)) == data
        assert await has_blob(c.blobs, sha256_bytes(data))


async def test_an_agent_cannot_overwrite_a_blob(
    connections: Connections, scheduler_bus: Bus
) -> None:
    a = await connections.agent("agent-a")
    c = await connections.client()
    source = b"print('hello')\n"
    await put_blob(c.blobs, sha256_bytes(source), source)
    await _overwrite_refused(a.nc, a.blobs, sha256_bytes(source))
    # its own commit of other bytes under that name is refused, and changes nothing
    planted = await _stage(a, sha256_bytes(source), [b"print('owned')\n"])
    reply = await _commit(a, planted)
    assert isinstance(reply, m.BlobCommitted) and not reply.new  # already stored: dropped
    assert await get_blob(c.blobs, sha256_bytes(source)) == source


async def test_garbage_planted_under_the_empty_hash_is_quarantined(
    connections: Connections, scheduler_bus: Bus
) -> None:
    c = await connections.client()
    planted = await _stage(c, EMPTY, [b"not empty at all"])
    reply = await _commit(c, planted)
    assert isinstance(reply, m.ErrorReply) and reply.code == "blob_corrupt"
    assert "quarantined" in reply.message and "Upload it again" in reply.message
    record = await _quarantined(scheduler_bus, EMPTY)
    assert (record.by, record.size) == ("client", len(b"not empty at all"))
    assert not await has_blob(c.blobs, EMPTY)
    # its chunks are gone too
    with pytest.raises(nats.js.errors.NotFoundError):
        await scheduler_bus.js.get_last_msg(STREAM, c.blobs.chunk_subject(planted.nuid))
    # an agent's planted blob is recorded as its
    a = await connections.agent("agent-a")
    reply = await _commit(a, await _stage(a, EMPTY, [b"mine"]))
    assert isinstance(reply, m.ErrorReply)
    assert (await _quarantined(scheduler_bus, EMPTY)).by == "agent.agent-a"
    # the honest upload of the empty file after them is stored and read back
    assert (await put_blob(c.blobs, EMPTY, b"")).new
    assert await get_blob(c.blobs, EMPTY) == b""


async def test_a_commit_cannot_name_another_blobs_chunks(
    connections: Connections, scheduler_bus: Bus
) -> None:
    c = await connections.client()
    victim = b"the victim's bytes"
    await put_blob(c.blobs, sha256_bytes(victim), victim)
    info, _ = await blob_entry(c.blobs, sha256_bytes(victim)) or pytest.fail("no entry")
    other = sha256_bytes(b"other")
    forged = m.BlobCommit(sha256=other, nuid=info.nuid, size=len(victim), chunks=1)
    reply = await _commit(c, forged)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request"
    assert "staged under its own hash" in reply.message
    assert await get_blob(c.blobs, sha256_bytes(victim)) == victim


async def test_a_file_changed_while_uploading_is_refused_by_the_uploader(
    connections: Connections,
) -> None:
    c = await connections.client()
    with pytest.raises(BlobError, match="the file changed after it was hashed"):
        await put_blob(c.blobs, sha256_bytes(b"before"), b"after")
    assert not await has_blob(c.blobs, sha256_bytes(b"before"))


async def test_blobs_stored_before_verification_are_checked_when_uploaded_again(
    connections: Connections, scheduler_bus: Bus
) -> None:
    """A store written by an earlier version holds unverified objects (written by nats-py's
    put, as that version did): a right one is kept and marked, a planted one replaced."""
    js = scheduler_bus.js
    legacy = await js.object_store(subjects.OBJ_BLOBS)
    right, wrong = b"kept as it is", b"replaced"
    config = (await js.stream_info(STREAM)).config
    await js.update_stream(dataclasses.replace(config, allow_rollup_hdrs=True))  # as it was
    await legacy.put(sha256_bytes(right), right)
    await legacy.put(sha256_bytes(wrong), b"planted before the upgrade")
    await ensure_resources(js)  # the upgraded scheduler's start
    assert not (await js.stream_info(STREAM)).config.allow_rollup_hdrs
    c = await connections.client()
    assert not await has_blob(c.blobs, sha256_bytes(right))  # so the client uploads it again
    assert not (await put_blob(c.blobs, sha256_bytes(right), right)).new
    assert await has_blob(c.blobs, sha256_bytes(right))

    assert (await put_blob(c.blobs, sha256_bytes(wrong), wrong)).new
    assert await get_blob(c.blobs, sha256_bytes(wrong)) == wrong
    record = await _quarantined(scheduler_bus, sha256_bytes(wrong))
    assert record.by == "unknown (stored unverified)"
    # entries no reader can use: a deletion marker, and one naming chunks no subject holds
    for data, meta in [
        (b"deleted before", {"name": "?", "bucket": "b", "nuid": "n", "deleted": True}),
        (b"bad nuid", {"name": "?", "bucket": "b", "nuid": "a.>", "chunks": 1, "size": 8}),
    ]:
        meta["name"] = sha256_bytes(data)
        await js.publish(
            scheduler_bus.blobs.meta_subject(sha256_bytes(data)), json.dumps(meta).encode()
        )
        assert not await has_blob(c.blobs, sha256_bytes(data))
        assert (await put_blob(c.blobs, sha256_bytes(data), data)).new
        assert await get_blob(c.blobs, sha256_bytes(data)) == data
        assert (await _quarantined(scheduler_bus, sha256_bytes(data))).reason == (
            "its meta entry is unusable"
        )
    # one meta entry per blob is kept
    state = await scheduler_bus.js.stream_info(
        STREAM, subjects_filter=scheduler_bus.blobs.meta_subject(sha256_bytes(wrong))
    )
    assert state.state.subjects == {scheduler_bus.blobs.meta_subject(sha256_bytes(wrong)): 1}


async def test_the_meta_entry_is_an_ordinary_nats_object(
    connections: Connections, scheduler_bus: Bus
) -> None:
    """Other services read blobs with any nats client's object store."""
    c = await connections.client()
    data = b"x" * 300_000
    await put_blob(c.blobs, sha256_bytes(data), data)
    store = await c.js.object_store(subjects.OBJ_BLOBS)
    assert (await store.get(sha256_bytes(data))).data == data
    raw = await c.js.get_last_msg(STREAM, c.blobs.meta_subject(sha256_bytes(data)))
    assert json.loads(raw.data)["headers"] == {"Sortie-Verified": "sha256"}


@pytest.mark.parametrize("chunks", [2, 12], ids=["chunk by chunk", "streamed"])
async def test_a_commit_claiming_more_chunks_than_sent_is_refused(
    connections: Connections, scheduler_bus: Bus, chunks: int
) -> None:
    c = await connections.client()
    parts = [bytes([i]) * 1000 for i in range(chunks)]
    sha = sha256_bytes(b"".join(parts))
    staged = await _stage(c, sha, parts[:-1])  # the last chunk never sent
    claimed = m.BlobCommit(
        sha256=sha, nuid=staged.nuid, size=staged.size + 1000, chunks=staged.chunks + 1
    )
    reply = await _commit(c, claimed)
    assert isinstance(reply, m.ErrorReply) and reply.code == "blob_corrupt"
    assert f"chunk {chunks} of {chunks} is missing" in reply.message
    assert not await has_blob(c.blobs, sha)
    assert (await put_blob(c.blobs, sha, b"".join(parts))).new
