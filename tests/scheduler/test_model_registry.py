"""The scheduler's model registry shell (scheduler.model_registry) on a real broker: racing
registrations of one name each get their own version (create-only writes), and a version is
never written twice."""

from __future__ import annotations

import asyncio

from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.scheduler.fence import Fence, FencedBucket
from sortie.scheduler.model_registry import register_model


async def _models(bus: Bus) -> FencedBucket:
    """The models bucket as a leader writes it: behind its fence."""
    leader = Leadership(
        holder="h", epoch=1, host="here", pid=1, acquired_at=0.0, renewed_at=0.0, lease_s=10.0
    )
    fence = Fence(bus.nc, bus.js, leader)
    await fence.raise_([subjects.KV_MODELS])
    return fence.bucket(subjects.KV_MODELS, await bus.js.key_value(subjects.KV_MODELS))


async def test_racing_registrations_of_one_name_get_distinct_versions(bus: Bus) -> None:
    data = b"weights"
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    request = m.ModelRegister(
        name="raced", files=[m.ModelFile(path="w.bin", sha256=sha, size=len(data))]
    )
    models = await _models(bus)
    replies = await asyncio.gather(*(register_model(bus, models, request) for _ in range(4)))
    assert all(isinstance(r, m.ModelRegistered) for r in replies), replies
    versions = sorted(r.model.version for r in replies if isinstance(r, m.ModelRegistered))
    assert versions == [1, 2, 3, 4]
    kv = await bus.js.key_value(subjects.KV_MODELS)
    stored = {e.key: codec.decode(m.ModelRecord, e.value or b"") for e in await kv_items(kv)}
    assert sorted(stored) == [subjects.model_key("raced", v) for v in (1, 2, 3, 4)]
    assert {r.files[0].sha256 for r in stored.values()} == {sha}


async def test_a_file_whose_blob_is_not_stored_is_refused_and_nothing_is_written(
    bus: Bus,
) -> None:
    request = m.ModelRegister(
        name="unsent", files=[m.ModelFile(path="w.bin", sha256="0" * 64, size=1)]
    )
    reply = await register_model(bus, await _models(bus), request)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request"
    assert "is not stored; upload it first" in reply.message
    assert await kv_items(await bus.js.key_value(subjects.KV_MODELS)) == []
