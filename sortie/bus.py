"""Connecting to NATS and the JetStream resources every component shares.

One place decides how a connection is made (and what an unreachable broker looks like to a
person), which streams, buckets and object stores exist and how they are configured, and how
content-addressed blobs are checked, uploaded and fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from proto import subjects

DEFAULT_URL = "nats://127.0.0.1:4222"
HASH_CHUNK = 1 << 20


class BrokerUnreachable(RuntimeError):
    """No NATS server answered at the given URL."""


class NotInitialised(RuntimeError):
    """The broker answers but Sortie's streams and buckets do not exist yet."""


@dataclass(frozen=True)
class Bus:
    """An open connection and handles to Sortie's JetStream resources."""

    url: str
    nc: NATS
    js: JetStreamContext
    runs: KeyValue
    agents: KeyValue
    computes: KeyValue
    nodes: KeyValue
    vms: KeyValue
    blobs: ObjectStore

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (TimeoutError, nats.errors.Error, OSError):
                await self.nc.close()


def unreachable_message(url: str, why: object) -> str:
    return (
        f"cannot reach the Sortie broker at {url} ({why}). Start one on this machine with "
        "`sortie up`, or point --url / SORTIE_URL at a running one."
    )


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout: float = 2.0,
    reconnect_forever: bool = False,
) -> NATS:
    """Connect to NATS. Clients fail fast; daemons (``reconnect_forever``) keep retrying.

    Raises :class:`BrokerUnreachable` with a message that says which URL and what to do.
    """
    options: dict[str, object] = {
        "servers": [url],
        "name": name,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1 if reconnect_forever else 3,
        "reconnect_time_wait": 0.5,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        # Stopping must be quick: in-flight work is either acknowledged or redelivered.
        "drain_timeout": 2,
    }

    async def _quiet(_exc: Exception) -> None:
        return None

    options["error_cb"] = _quiet
    delay = 0.2
    while True:
        try:
            return await nats.connect(**options)  # type: ignore[arg-type]
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            if not reconnect_forever:
                raise BrokerUnreachable(
                    unreachable_message(url, exc or type(exc).__name__)
                ) from None
            # A daemon waits for its broker: log once per attempt, back off up to 5 s.
            structlog.get_logger("sortie.bus").warning(
                "broker unreachable; retrying", url=url, retry_in_s=delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_resources(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create Sortie's streams, buckets and object store if missing (idempotent)."""
    streams = [
        StreamConfig(
            name=subjects.STREAM_REPORTS,
            subjects=[subjects.REPORTS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.STREAM_LOGS,
            subjects=[subjects.LOGS_ALL],
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.STREAM_METRICS,
            subjects=[subjects.METRICS_ALL],
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
    ]
    for cfg in streams:
        try:
            await js.stream_info(cfg.name)  # type: ignore[arg-type]
        except nats.js.errors.NotFoundError:
            await js.add_stream(cfg)
    for bucket in (
        subjects.KV_RUNS,
        subjects.KV_AGENTS,
        subjects.KV_COMPUTES,
        subjects.KV_NODES,
        subjects.KV_VMS,
    ):
        try:
            await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, replicas=replicas))
    try:
        await js.object_store(subjects.OBJ_BLOBS)
    except nats.js.errors.BucketNotFoundError:
        # nats-py overwrites config.bucket with its ``bucket`` argument: pass both.
        await js.create_object_store(
            subjects.OBJ_BLOBS,
            config=ObjectStoreConfig(bucket=subjects.OBJ_BLOBS, replicas=replicas),
        )


async def open_bus(
    url: str,
    name: str,
    *,
    create: bool = False,
    reconnect_forever: bool = False,
    connect_timeout: float = 2.0,
) -> Bus:
    """Connect and bind Sortie's resources; ``create`` makes them first (the scheduler does)."""
    nc = await connect(
        url, name, reconnect_forever=reconnect_forever, connect_timeout=connect_timeout
    )
    js = nc.jetstream()
    try:
        if create:
            await ensure_resources(js)
        runs = await js.key_value(subjects.KV_RUNS)
        agents = await js.key_value(subjects.KV_AGENTS)
        computes = await js.key_value(subjects.KV_COMPUTES)
        nodes = await js.key_value(subjects.KV_NODES)
        vms = await js.key_value(subjects.KV_VMS)
        blobs = await js.object_store(subjects.OBJ_BLOBS)
    except nats.js.errors.BucketNotFoundError:
        await nc.close()
        raise NotInitialised(
            f"the broker at {url} has no Sortie state yet: start the scheduler "
            "(`sortie up` or `sortie scheduler`) first"
        ) from None
    except nats.js.errors.ServiceUnavailableError:
        await nc.close()
        raise NotInitialised(
            f"the broker at {url} does not have JetStream enabled: start it with -js "
            "(`sortie up` does this)"
        ) from None
    return Bus(
        url=url,
        nc=nc,
        js=js,
        runs=runs,
        agents=agents,
        computes=computes,
        nodes=nodes,
        vms=vms,
        blobs=blobs,
    )


# --- content-addressed blobs -------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def has_blob(store: ObjectStore, sha: str) -> bool:
    try:
        await store.get_info(sha)
    except nats.js.errors.ObjectNotFoundError:
        return False
    return True


async def missing_blobs(
    store: ObjectStore, hashes: Iterable[str], *, concurrency: int = 64
) -> set[str]:
    """Which of ``hashes`` the object store lacks."""
    sem = asyncio.Semaphore(concurrency)
    wanted = sorted(set(hashes))

    async def check(sha: str) -> str | None:
        async with sem:
            return None if await has_blob(store, sha) else sha

    found = await asyncio.gather(*(check(s) for s in wanted))
    return {s for s in found if s is not None}


async def put_blob(store: ObjectStore, sha: str, source: Path | bytes) -> None:
    """Upload one blob under its sha256 name (bytes, or a file streamed from disk)."""
    if isinstance(source, bytes):
        await store.put(sha, source)
        return
    with open(source, "rb") as fh:
        await store.put(sha, fh)


async def get_blob(store: ObjectStore, sha: str) -> bytes:
    result = await store.get(sha)
    data = result.data or b""
    if sha256_bytes(data) != sha:
        raise ValueError(f"blob {sha} is corrupt in the object store (hash mismatch)")
    return data


async def fetch_blob_to(store: ObjectStore, sha: str, dest: Path) -> None:
    """Download one blob into ``dest`` atomically, verifying its hash."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    with open(tmp, "wb") as fh:
        await store.get(sha, writeinto=fh)
    if sha256_file(tmp) != sha:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"blob {sha} is corrupt in the object store (hash mismatch)")
    tmp.replace(dest)


# ASYNC109: ``timeout`` is nats-py's wait for each next entry, not a deadline for the whole call.
async def kv_items(kv: KeyValue, *, timeout: float = 30.0) -> list[KeyValue.Entry]:  # noqa: ASYNC109
    """The current value of every key in a bucket, in one ordered pass (no per-key requests).

    Not nats-py's ``watchall``: its "initial values done" marker can arrive before the last
    value (it compares a consumer count with messages still in flight), which would silently
    drop keys. Here the end is the consumer's own ``num_pending == 0`` on a delivered message.
    """
    bucket = kv._name
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    info = await kv._js.stream_info(stream)
    if not info.state.messages:
        return []
    sub = await kv._js.subscribe(
        f"{prefix}>",
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    found: dict[str, KeyValue.Entry] = {}
    try:
        while True:
            msg = await sub.next_msg(timeout=timeout)
            key = msg.subject[len(prefix) :]
            op = (msg.headers or {}).get("KV-Operation")
            meta = msg.metadata
            if op in ("DEL", "PURGE"):
                found.pop(key, None)
            else:
                found[key] = KeyValue.Entry(
                    bucket=bucket,
                    key=key,
                    value=msg.data,
                    revision=meta.sequence.stream,
                    delta=meta.num_pending,
                    created=None,
                    operation=None,
                )
            if meta.num_pending == 0:
                break
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return list(found.values())
