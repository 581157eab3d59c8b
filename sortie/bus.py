"""Connecting to NATS and the JetStream resources every component shares.

One place decides how a connection is made (and what an unreachable broker looks like to a
person), which streams, buckets and object stores exist and how they are configured, and how
content-addressed blobs are checked, uploaded and fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import ssl
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
JETSTREAM_WAIT_S = 15.0  # how long opening the bus waits out a cluster's leader election
REPLICAS_READY_S = 30.0  # how long a change of replica count may take to settle


class BrokerUnreachable(RuntimeError):
    """No NATS server answered at the given URL."""


class AccessDenied(RuntimeError):
    """The broker refused our credentials (or wanted some); the message says what to do."""


ENV_CREDS = "SORTIE_CREDS"
ENV_TLS_CA = "SORTIE_TLS_CA"


@dataclass(frozen=True)
class BusAuth:
    """Who we are to the broker and whom we trust: a NATS ``.creds`` file (``sortie.auth``)
    and the CA that signed the broker's TLS certificate. Both optional: a broker without
    authentication takes neither."""

    creds: Path | None = None
    tls_ca: Path | None = None
    tls_hostname: str | None = None  # the name the certificate is checked against

    @classmethod
    def from_env(cls) -> BusAuth:
        """``SORTIE_CREDS`` and ``SORTIE_TLS_CA`` (how daemons are usually given theirs)."""
        creds = os.environ.get(ENV_CREDS)
        ca = os.environ.get(ENV_TLS_CA)
        return cls(creds=Path(creds) if creds else None, tls_ca=Path(ca) if ca else None)


class NotInitialised(RuntimeError):
    """The broker answers but Sortie's streams and buckets do not exist yet."""


class ReplicasUnavailable(NotInitialised):
    """The broker cannot keep Sortie's resources with the replica count asked for."""


def split_urls(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` -> both URLs: a daemon fails over between them."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    return urls or [url]


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
    auth: BusAuth | None = None,
) -> NATS:
    """Connect to NATS. Clients fail fast; daemons (``reconnect_forever``) keep retrying.

    Raises :class:`BrokerUnreachable` with a message that says which URL and what to do, and
    :class:`AccessDenied` when the broker refuses the credentials (never retried: a daemon
    with wrong credentials should stop and say so).
    """
    options: dict[str, object] = {
        "servers": split_urls(url),
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

    if auth is not None:
        options.update(_auth_options(auth))
    log = structlog.get_logger("sortie.bus")
    connecting = True
    warned: set[str] = set()

    async def _on_error(exc: Exception) -> None:
        if connecting and isinstance(exc, ssl.SSLError):
            # a certificate that is not trusted will not become trusted: stop now (nats-py
            # would also hang after this error)
            raise BrokerUnreachable(tls_message(url, exc, auth))
        if _is_auth_error(exc):
            if connecting:
                # nats-py would retry a refusal forever (daemons) or as "no servers": stop now
                raise AccessDenied(denied_message(url, auth))
            if "refused" not in warned:
                warned.add("refused")
                log.error("the broker refused this connection's credentials", url=url, name=name)
        elif "permissions violation" in str(exc).lower() and str(exc) not in warned:
            # what was refused is a subject, never a secret; once per subject (100 at most)
            if len(warned) >= 100:
                return
            warned.add(str(exc))
            log.warning("the broker refused an operation", error=str(exc), name=name)

    options["error_cb"] = _on_error
    delay = 0.2
    while True:
        nc = NATS()
        try:
            await nc.connect(**options)  # type: ignore[arg-type]
            connecting = False
            return nc
        except (AccessDenied, BrokerUnreachable):
            await _abandon(nc)
            raise
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            await _abandon(nc)
            if isinstance(exc, ssl.SSLError):
                raise BrokerUnreachable(tls_message(url, exc, auth)) from None
            if not reconnect_forever:
                raise BrokerUnreachable(
                    unreachable_message(url, exc or type(exc).__name__)
                ) from None
            # A daemon waits for its broker: log once per attempt, back off up to 5 s.
            log.warning("broker unreachable; retrying", url=url, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _abandon(nc: NATS) -> None:
    """Close a client whose first connection failed (bounded: after a failed TLS handshake
    nats-py's close can wait forever)."""
    with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
        await asyncio.wait_for(nc.close(), 1.0)


def tls_message(url: str, exc: ssl.SSLError, auth: BusAuth | None) -> str:
    why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    trusted = f"the CA in {auth.tls_ca}" if auth is not None and auth.tls_ca else "this system"
    return (
        f"TLS with the Sortie broker at {url} failed ({why}): its certificate is not trusted "
        f"by {trusted}. Give the PEM file of the CA that signed it with --tls-ca or "
        "SORTIE_TLS_CA (`sortie up --tls-ca` names it in the profile)"
    )


def _auth_options(auth: BusAuth) -> dict[str, object]:
    options: dict[str, object] = {}
    if auth.creds is not None:
        from sortie.auth import connect_callbacks, load_creds

        creds = load_creds(auth.creds)  # AuthError now, with the path, if it is unusable
        user_jwt, sign = connect_callbacks(auth.creds)
        options["user_jwt_cb"] = user_jwt
        options["signature_cb"] = sign
        options["inbox_prefix"] = creds.inbox_prefix
    if auth.tls_ca is not None:
        try:
            options["tls"] = ssl.create_default_context(cafile=str(auth.tls_ca))
        except (OSError, ssl.SSLError) as exc:
            raise AccessDenied(
                f"cannot use {auth.tls_ca} as the broker's TLS CA ({exc}): give the PEM file "
                "of the CA that signed the broker's certificate (--tls-ca or SORTIE_TLS_CA)"
            ) from None
    if auth.tls_hostname is not None:
        options["tls_hostname"] = auth.tls_hostname
    return options


def _is_auth_error(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def denied_message(url: str, auth: BusAuth | None) -> str:
    if auth is None or auth.creds is None:
        return (
            f"the Sortie broker at {url} requires credentials: give a .creds file with --creds "
            "or SORTIE_CREDS (`sortie up` writes one for this machine's user and names it in "
            "its profile; `sortie auth creds` makes more)"
        )
    return (
        f"the Sortie broker at {url} refused the credentials in {auth.creds}: they were issued "
        "for another broker, or the broker's authority was made anew; get current ones from "
        "the machine that runs the broker (`sortie auth creds`)"
    )


KV_BUCKETS = (
    subjects.KV_RUNS,
    subjects.KV_AGENTS,
    subjects.KV_COMPUTES,
    subjects.KV_NODES,
    subjects.KV_VMS,
)


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
        obj_stream(subjects.OBJ_BLOBS),
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
    streams = [
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
    changed: list[str] = []
    try:
        for cfg in streams:
            try:
                changed += await _keep_replicas(js, cfg.name, replicas)  # type: ignore[arg-type]
            except nats.js.errors.NotFoundError:
                await js.add_stream(cfg)
        for bucket in KV_BUCKETS:
            try:
                changed += await _keep_replicas(js, kv_stream(bucket), replicas)
            except nats.js.errors.NotFoundError:
                await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, replicas=wanted))
        try:
            changed += await _keep_replicas(js, obj_stream(subjects.OBJ_BLOBS), replicas)
        except nats.js.errors.NotFoundError:
            # nats-py overwrites config.bucket with its ``bucket`` argument: pass both.
            await js.create_object_store(
                subjects.OBJ_BLOBS,
                config=ObjectStoreConfig(bucket=subjects.OBJ_BLOBS, replicas=wanted),
            )
    except nats.js.errors.APIError as exc:
        if wanted == 1 or isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise
        raise ReplicasUnavailable(
            f"the broker cannot keep Sortie's streams with {wanted} replicas "
            f"({exc.description}): that needs a JetStream cluster of at least {wanted} "
            "servers (deploy/nats/); against a single server leave --replicas out"
        ) from None
    await asyncio.gather(*(_settle(js, name, wanted) for name in changed))


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


async def _bind(
    js: JetStreamContext, create: bool, replicas: int | None
) -> tuple[KeyValue, KeyValue, KeyValue, KeyValue, KeyValue, ObjectStore]:
    """Sortie's buckets and object store, waiting out a cluster's leader elections.

    A stream whose leader was on a server that just died answers nothing until its other
    servers elect one (seconds): retry timeouts, for up to ``JETSTREAM_WAIT_S``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JETSTREAM_WAIT_S
    while True:
        try:
            if create:
                await ensure_resources(js, replicas=replicas)
            return (
                await js.key_value(subjects.KV_RUNS),
                await js.key_value(subjects.KV_AGENTS),
                await js.key_value(subjects.KV_COMPUTES),
                await js.key_value(subjects.KV_NODES),
                await js.key_value(subjects.KV_VMS),
                await js.object_store(subjects.OBJ_BLOBS),
            )
        except (TimeoutError, nats.errors.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def open_bus(
    url: str,
    name: str,
    *,
    create: bool = False,
    replicas: int | None = None,
    reconnect_forever: bool = False,
    connect_timeout: float = 2.0,
    auth: BusAuth | None = None,
) -> Bus:
    """Connect and bind Sortie's resources; ``create`` makes them first (the scheduler does),
    with ``replicas`` copies each (see :func:`ensure_resources`; 3 on a 3-node cluster).

    ``url`` may list several servers of one cluster, comma-separated: the connection fails
    over between them. ``auth``: credentials and TLS trust (see :class:`BusAuth`).
    """
    nc = await connect(
        url,
        name,
        reconnect_forever=reconnect_forever,
        connect_timeout=connect_timeout,
        auth=auth,
    )
    js = nc.jetstream()
    try:
        runs, agents, computes, nodes, vms, blobs = await _bind(js, create, replicas)
    except ReplicasUnavailable:
        await nc.close()
        raise
    except (TimeoutError, nats.errors.TimeoutError):
        await nc.close()
        raise BrokerUnreachable(
            f"the broker at {url} did not answer JetStream requests for {JETSTREAM_WAIT_S:.0f}s "
            "(a cluster that lost a server elects new leaders within seconds; if it lost a "
            "majority, start them again)"
        ) from None
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
            "(`sortie up` does this); a cluster also needs a majority of its servers up"
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
