"""Connecting to NATS (one way, with messages a person can act on) and binding Sortie's
JetStream resources."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import DEFAULT_PENDING_SIZE
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from sortie.bus import lean
from sortie.bus.blobs import BlobStore
from sortie.bus.errors import AccessDenied, BrokerUnreachable, NotInitialised, ReplicasUnavailable
from sortie.bus.pause import retry_pause
from sortie.bus.resources import ensure_resources
from sortie.proto import subjects

DEFAULT_URL = "nats://127.0.0.1:4222"
JETSTREAM_WAIT_S = 15.0  # how long opening the bus waits out a cluster's leader election


ENV_CREDS = "SORTIE_CREDS"
ENV_TLS_CA = "SORTIE_TLS_CA"


@dataclass(frozen=True)
class BusAuth:
    """Who we are to the broker and whom we trust: a NATS ``.creds`` file (``sortie.bus.auth``)
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
    blobs: BlobStore

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
    stay_connected: bool = False,
    auth: BusAuth | None = None,
) -> NATS:
    """Connect to NATS. Clients fail fast; daemons (``reconnect_forever``) keep retrying.
    ``stay_connected``: fail fast on the first connection, but once connected reconnect for
    as long as the broker is away, as a daemon does (a long-lived client: the dashboard).

    Raises :class:`BrokerUnreachable` with a message that says which URL and what to do, and
    :class:`AccessDenied` when the broker refuses the credentials (never retried: a daemon
    with wrong credentials should stop and say so).
    """
    if lean.is_websocket(url):
        lean.enable_websocket()
    options = _client_options(url, name, connect_timeout, reconnect_forever)
    if auth is not None:
        options.update(_auth_options(auth))
    log = structlog.get_logger("sortie.bus")
    errors = _ErrorWatch(url=url, name=name, auth=auth, log=log)
    options["error_cb"] = errors.on_error  # nats-py wants a coroutine function
    delay = 0.2
    while True:
        nc = NATS()
        try:
            await nc.connect(**options)  # type: ignore[arg-type]  # options mixes value types; nats-py types each keyword
            errors.connecting = False
            if stay_connected:  # not before: nats-py's first connect never ends at -1
                nc.options["max_reconnect_attempts"] = -1
            return nc
        except (AccessDenied, BrokerUnreachable):
            await _abandon(nc)
            raise
        except (TimeoutError, nats.errors.NoServersError, OSError) as exc:
            await _abandon(nc)
            fatal = _unretried(url, exc, auth, reconnect_forever=reconnect_forever)
            if fatal is not None:
                raise fatal from None
            # A daemon waits for its broker: log once per attempt, back off up to 5 s.
            log.warning("broker unreachable; retrying", url=url, retry_in_s=delay)
            await retry_pause(delay)
            delay = min(delay * 2, 5.0)


DAEMON_PENDING_BYTES = 64 * 2**20


def _client_options(
    url: str, name: str, connect_timeout: float, reconnect_forever: bool
) -> dict[str, object]:
    """nats-py's connect options, less authentication and the error callback."""
    return {
        "servers": split_urls(url),
        "name": name,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1 if reconnect_forever else 3,
        # what a daemon may publish while it reconnects (nats-py's default, 2 MiB, is one
        # cycle's batch of 1,500 records: a reconnect then failed the write)
        "pending_size": DAEMON_PENDING_BYTES if reconnect_forever else DEFAULT_PENDING_SIZE,
        "reconnect_time_wait": 0.5,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        # Stopping must be quick: in-flight work is either acknowledged or redelivered.
        "drain_timeout": 2,
    }


def _unretried(
    url: str, exc: Exception, auth: BusAuth | None, *, reconnect_forever: bool
) -> BrokerUnreachable | None:
    """What a failed first connection raises, or None where a daemon retries it: a TLS
    failure never heals, and a client fails fast."""
    if isinstance(exc, ssl.SSLError):
        return BrokerUnreachable(tls_message(url, exc, auth))
    if not reconnect_forever:
        return BrokerUnreachable(unreachable_message(url, exc or type(exc).__name__))
    return None


@dataclass
class _ErrorWatch:
    """nats-py's ``error_cb`` (:meth:`on_error`) for one connection. While the first
    connection is being made (``connecting``), an untrusted certificate or refused
    credentials end it at once; afterwards refusals are logged, once each."""

    url: str
    name: str
    auth: BusAuth | None
    log: structlog.stdlib.BoundLogger
    connecting: bool = True
    warned: set[str] = field(default_factory=set)

    async def on_error(self, exc: Exception) -> None:
        if self.connecting and isinstance(exc, ssl.SSLError):
            # a certificate that is not trusted will not become trusted: stop now (nats-py
            # would also hang after this error)
            raise BrokerUnreachable(tls_message(self.url, exc, self.auth))
        if _is_auth_error(exc):
            if self.connecting:
                # nats-py would retry a refusal forever (daemons) or as "no servers": stop now
                raise AccessDenied(denied_message(self.url, self.auth))
            if "refused" not in self.warned:
                self.warned.add("refused")
                self.log.error(
                    "the broker refused this connection's credentials", url=self.url, name=self.name
                )
        elif "permissions violation" in str(exc).lower() and str(exc) not in self.warned:
            # what was refused is a subject, never a secret; once per subject (100 at most)
            if len(self.warned) >= 100:
                return
            self.warned.add(str(exc))
            self.log.warning("the broker refused an operation", error=str(exc), name=self.name)


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
        from sortie.bus.auth import connect_callbacks, load_creds

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
    expired = _expired_at(auth.creds)
    if expired is not None:
        return (
            f"the Sortie broker at {url} refused the credentials in {auth.creds}: they expired "
            f"at {expired} (UTC; a running holder renews them before that); get new ones from "
            "the machine that runs the broker (`sortie auth creds`)"
        )
    return (
        f"the Sortie broker at {url} refused the credentials in {auth.creds}: the credential "
        "was revoked (`sortie auth list` shows it), or issued for another broker, or the "
        "broker's authority was made anew; get current ones from the machine that runs the "
        "broker (`sortie auth creds`)"
    )


def _expired_at(path: Path) -> str | None:
    """When the credentials in ``path`` expired, if they have (``None``: not, or unreadable)."""
    from sortie.bus.auth import AuthError, jwt_claims, load_creds

    try:
        exp = jwt_claims(load_creds(path).jwt).get("exp")
    except (AuthError, ValueError):
        return None
    if not isinstance(exp, int) or exp > time.time():
        return None
    return datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S")


STREAM_STORE_FAILED = 10049  # JetStream's "error creating store for stream"


async def _bind(
    js: JetStreamContext, create: bool, replicas: int | None
) -> tuple[KeyValue, KeyValue, KeyValue, KeyValue, KeyValue]:
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
            await js.object_store(subjects.OBJ_BLOBS)  # it exists (BlobStore reads it directly)
            return (
                await js.key_value(subjects.KV_RUNS),
                await js.key_value(subjects.KV_AGENTS),
                await js.key_value(subjects.KV_COMPUTES),
                await js.key_value(subjects.KV_NODES),
                await js.key_value(subjects.KV_VMS),
            )
        except (TimeoutError, nats.errors.TimeoutError):
            if loop.time() > deadline:
                raise
            await retry_pause(0.5)
        except nats.js.errors.APIError as exc:
            # the server could not make a stream's store this time (seen under heavy load on
            # a fresh store): say why and try again, within the same bound
            if exc.err_code != STREAM_STORE_FAILED or loop.time() > deadline:
                raise
            structlog.get_logger("sortie.bus").warning(
                "creating a stream failed, trying again", error=exc.description
            )
            await retry_pause(0.5)


async def open_bus(
    url: str,
    name: str,
    *,
    create: bool = False,
    replicas: int | None = None,
    reconnect_forever: bool = False,
    stay_connected: bool = False,
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
        stay_connected=stay_connected,
        connect_timeout=connect_timeout,
        auth=auth,
    )
    js = nc.jetstream()
    try:
        runs, agents, computes, nodes, vms = await _bind(js, create, replicas)
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
        blobs=BlobStore(nc=nc, js=js),
    )
