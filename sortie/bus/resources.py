"""Which streams, KV buckets and object stores Sortie keeps, and how they are configured."""

from __future__ import annotations

import asyncio
import dataclasses

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from sortie.bus.errors import ReplicasUnavailable
from sortie.proto import subjects

REPLICAS_READY_S = 30.0  # how long a change of replica count may take to settle


KV_BUCKETS = (
    subjects.KV_RUNS,
    subjects.KV_AGENTS,
    subjects.KV_COMPUTES,
    subjects.KV_NODES,
    subjects.KV_VMS,
    subjects.KV_QUARANTINE,
    subjects.KV_MODELS,
    subjects.KV_WEB_TOKENS,
    subjects.KV_STEP_CACHE,
    subjects.KV_LEADERSHIP,
    subjects.KV_SUBMISSIONS,
)
OBJECT_STORES = (subjects.OBJ_BLOBS, subjects.OBJ_STATE)


def kv_stream(bucket: str) -> str:
    """The stream JetStream keeps a KV bucket in."""
    return f"KV_{bucket}"


def obj_stream(bucket: str) -> str:
    """The stream JetStream keeps an object store in."""
    return f"OBJ_{bucket}"


def sortie_streams() -> list[str]:
    """Every stream behind Sortie's resources (streams, KV buckets, the object store)."""
    return [
        subjects.STREAM_REPORTS,
        subjects.STREAM_LOGS,
        subjects.STREAM_METRICS,
        *(kv_stream(b) for b in KV_BUCKETS),
        *(obj_stream(b) for b in OBJECT_STORES),
    ]


async def ensure_resources(js: JetStreamContext, *, replicas: int | None = None) -> None:
    """Create Sortie's streams, buckets and object store if missing (idempotent).

    ``replicas`` is how many copies of each the cluster keeps. One that already exists with
    another count is changed in place (the servers move the data), so restarting the scheduler
    with ``--replicas 3`` on a grown cluster just works. ``None`` creates missing ones with one
    copy and leaves existing ones as they are, so a restart that omits the option never
    shrinks a replicated deployment. Raises :class:`ReplicasUnavailable` when the broker
    cannot keep that many copies.
    """
    wanted = replicas or 1
    try:
        changed = await _create_or_resize(js, replicas, wanted)
    except nats.js.errors.APIError as exc:
        if wanted == 1 or isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise
        raise ReplicasUnavailable(
            f"the broker cannot keep Sortie's streams with {wanted} replicas "
            f"({exc.description}): that needs a JetStream cluster of at least {wanted} "
            "servers (deploy/nats/); against a single server leave --replicas out"
        ) from None
    await asyncio.gather(*(_settle(js, name, wanted) for name in changed))


def _stream_configs(wanted: int) -> list[StreamConfig]:
    """Sortie's plain streams (reports, logs, metrics), with ``wanted`` copies each."""
    return [
        StreamConfig(
            name=subjects.STREAM_REPORTS,
            subjects=[subjects.REPORTS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=wanted,
        ),
        StreamConfig(
            name=subjects.STREAM_LOGS,
            subjects=[subjects.LOGS_ALL],
            storage=StorageType.FILE,
            num_replicas=wanted,
        ),
        StreamConfig(
            name=subjects.STREAM_METRICS,
            subjects=[subjects.METRICS_ALL],
            storage=StorageType.FILE,
            num_replicas=wanted,
        ),
    ]


async def _create_or_resize(js: JetStreamContext, replicas: int | None, wanted: int) -> list[str]:
    """Create each missing stream, bucket and object store with ``wanted`` copies, and give
    each existing one ``replicas`` copies (when given); the streams whose count changed."""
    changed: list[str] = []
    for cfg in _stream_configs(wanted):
        try:
            changed += await _keep_replicas(js, cfg.name, replicas)  # type: ignore[arg-type]  # StreamConfig.name is Optional in nats-py; ours all set it
            await _keep_subjects(js, cfg)
        except nats.js.errors.NotFoundError:
            await js.add_stream(cfg)
    for bucket in KV_BUCKETS:
        try:
            changed += await _keep_replicas(js, kv_stream(bucket), replicas)
        except nats.js.errors.NotFoundError:
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, replicas=wanted))
    for store in OBJECT_STORES:
        try:
            changed += await _keep_replicas(js, obj_stream(store), replicas)
        except nats.js.errors.NotFoundError:
            # nats-py overwrites config.bucket with its ``bucket`` argument: pass both.
            await js.create_object_store(
                store, config=ObjectStoreConfig(bucket=store, replicas=wanted)
            )
    await _refuse_rollups(js, obj_stream(subjects.OBJ_BLOBS))
    return changed


async def _refuse_rollups(js: JetStreamContext, stream: str) -> None:
    """No rollup headers on the blob store (existing stores are changed in place): one would
    let any uploader purge a blob's chunks or the whole store. Blobs are written once, by the
    scheduler's commit (``sortie.bus.blobcommit``), which needs none."""
    info = await js.stream_info(stream)
    if info.config.allow_rollup_hdrs:
        await js.update_stream(dataclasses.replace(info.config, allow_rollup_hdrs=False))


async def _keep_replicas(js: JetStreamContext, stream: str, replicas: int | None) -> list[str]:
    """Give ``stream`` ``replicas`` copies; ``[stream]`` if that changed it, else ``[]``.

    Raises NotFoundError when the stream does not exist.
    """
    info = await js.stream_info(stream)
    current = info.config.num_replicas or 1
    if replicas is None or current == replicas:
        return []
    await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
    structlog.get_logger("sortie.bus").info(
        "stream replicas changed", stream=stream, old=current, new=replicas
    )
    return [stream]


async def _keep_subjects(js: JetStreamContext, cfg: StreamConfig) -> None:
    """Give an existing stream this version's subjects (the logs and metrics streams of
    Sortie 0.1 took ``sortie.logs.<run>`` only; their messages stay and stay readable)."""
    info = await js.stream_info(cfg.name)  # type: ignore[arg-type]  # set for all of ours
    if info.config.subjects != cfg.subjects:
        await js.update_stream(dataclasses.replace(info.config, subjects=cfg.subjects))
        structlog.get_logger("sortie.bus").info(
            "stream subjects changed", stream=cfg.name, subjects=cfg.subjects
        )


async def _settle(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Wait, bounded, until every copy of a stream whose replica count changed is current.

    The servers copy the data in the background, and a stream still gaining peers refuses
    new consumers ("insufficient resources").
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLICAS_READY_S
    while loop.time() < deadline:
        cluster = (await js.stream_info(stream)).cluster
        peers = (cluster.replicas or []) if cluster else []
        current = [p for p in peers if p.current]
        if cluster and cluster.leader and len(current) == len(peers) == replicas - 1:
            return
        await asyncio.sleep(0.2)
    structlog.get_logger("sortie.bus").warning(
        "stream replicas still catching up", stream=stream, replicas=replicas
    )
