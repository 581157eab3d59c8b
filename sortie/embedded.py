"""`sortie up`: a local broker, the scheduler and one agent for the `local` target."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sortie.agents.config import AgentConfig, default_agent_id
from sortie.agents.daemon import run_agent
from sortie.agents.limits import RunLimits
from sortie.bus.auth import (
    DEFAULT_TTL_S,
    AuthError,
    Authority,
    init_authority,
    keep_fixed,
    write_private,
)
from sortie.bus.broker import (
    BrokerError,
    TlsFiles,
    adopt_unauthenticated_store,
    check_can_start,
    start_broker,
)
from sortie.bus.children import die_with_parent
from sortie.bus.connection import BusAuth
from sortie.bus.datadir import DataDirLocked, lock_data_dir
from sortie.bus.profile import profile_path, remove_profile_if_ours, write_profile
from sortie.bus.retention import Retention
from sortie.bus.store_limits import derive_store_limit, human
from sortie.proto.permissions import Role
from sortie.scheduler.blob_gc import BlobGc
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.up_schedulers import child_config, scheduler_argv, supervise
from sortie.web.settings import WebError

log = structlog.get_logger("sortie.up")


@dataclass(frozen=True)
class Bounds:
    """What runs may keep: the streams' retention and the blob sweep (the scheduler's) and
    per-run limits (the local agent's)."""

    retention: Retention = field(default_factory=Retention)
    limits: RunLimits = field(default_factory=RunLimits)
    blob_gc: BlobGc = field(default_factory=BlobGc)


async def serve(  # noqa: PLR0913 - one keyword per setting of `sortie up`
    url: str,
    data_dir: Path,
    stop: asyncio.Event,
    *,
    agent: bool = True,
    gpu_pool: tuple[int, ...] = (),
    authority: Authority | None = None,
    tls_ca: Path | None = None,
    metrics: tuple[str, int] | None = None,
    store_limit: int | None = None,
    bounds: Bounds | None = None,
    schedulers: int = 1,
) -> None:
    """Run the scheduler (and a local agent) against ``url`` until ``stop`` is set.

    ``schedulers``: 1 runs it in this process; more run that many as supervised child
    processes (up_schedulers.py), one leading and the others standing by.
    ``metrics``: (host, port) where the scheduler serves its Prometheus metrics (None: not).
    ``store_limit``: the broker's ``max_file_store``, shared out among the bulk streams.

    With an ``authority`` each connects as its own role, and the scheduler mints credentials
    for the agents it starts.
    """
    ready = asyncio.Event()
    bounds = bounds or Bounds()
    sched = SchedulerConfig(
        url=url,
        data_dir=data_dir / "scheduler",
        gpu_pool=gpu_pool,
        auth=BusAuth(
            creds=authority.scheduler_creds if authority else None,
            tls_ca=tls_ca,
        ),
        account_key=authority.account_key_path if authority else None,
        creds_ttl_s=authority.ttl_s if authority else DEFAULT_TTL_S,
        metrics_host=metrics[0] if metrics else "127.0.0.1",
        metrics_port=metrics[1] if metrics else None,
        store_limit=store_limit,
        retention=bounds.retention,
        blob_gc=bounds.blob_gc,
    )
    if schedulers > 1:
        # the agent does not wait for them: it waits for the broker's resources by itself
        tasks = [
            asyncio.create_task(
                supervise(scheduler_argv(child_config(sched, k)), f"scheduler-{k}", stop)
            )
            for k in range(1, schedulers + 1)
        ]
    else:
        tasks = [asyncio.create_task(run_scheduler(sched, stop, ready))]
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({tasks[0], waiter}, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done:
            waiter.cancel()
            tasks[0].result()  # raises what stopped the scheduler
            return
    if agent:
        agent_id = default_agent_id("local")
        agent_creds = None
        if authority is not None:
            creds = authority.signer.mint(Role("agent", agent_id))
            agent_creds = write_private(data_dir / "agent" / "agent.creds", creds.text())
        config = AgentConfig(
            url=url,
            agent_id=agent_id,
            target="local",
            data_dir=data_dir / "agent",
            gpu_indices=local_gpus(gpu_pool),
            auth=BusAuth(creds=agent_creds, tls_ca=tls_ca),
            limits=bounds.limits,
        )
        tasks.append(asyncio.create_task(run_agent(config, stop)))
    if authority is not None:
        tasks.append(asyncio.create_task(_keep_client_creds(authority, stop)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


async def _keep_client_creds(authority: Authority, stop: asyncio.Event) -> None:
    """This user's client credentials (the profile names them) stay valid: renewed when due,
    minted anew once revoked. (The scheduler and the local agent renew their own.)"""
    check_s = max(1.0, min(60.0, authority.ttl_s / 10))
    role = Role("client")
    while not stop.is_set():
        try:
            keep_fixed(authority, authority.client_creds, role)
        except (AuthError, OSError) as exc:
            log.error("client credentials not renewed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), check_s)


def local_gpus(gpu_pool: tuple[int, ...]) -> list[int] | None:
    """GPUs the embedded local agent serves: all, or those not lent to cluster nodes (a GPU is
    never advertised by two agents)."""
    if not gpu_pool:
        return None
    from sortie.agents.gpus import probe_gpus

    return [d.index for d in probe_gpus() if d.index not in gpu_pool]


def up(  # noqa: PLR0913 - one keyword per flag of `sortie up`
    data_dir: Path,
    host: str,
    port: int,
    *,
    sync_always: bool = True,
    gpu_pool: tuple[int, ...] = (),
    auth_ttl_s: int | None = DEFAULT_TTL_S,
    tls: TlsFiles | None = None,
    metrics: tuple[str, int] | None = None,
    store_limit: int | None = None,
    bounds: Bounds | None = None,
    dashboard_port: int | None = None,
    schedulers: int = 1,
) -> int:
    """Start everything, print one ready line, run until Ctrl-C or SIGTERM.

    ``dashboard_port``: where the dashboard listens on 127.0.0.1 (``sortie web`` as a child
    process, open without a login there); 0: none; None: ``DEFAULT_PORT``, or none with a
    warning when that port is taken (a port given and taken is refused).

    ``store_limit``: the most the JetStream store may hold (None: derived from the free disk
    space at start, ``bus.store_limits.derive_store_limit``).

    ``auth_ttl_s``: the broker requires credentials, valid this long and renewed (``None``:
    no authentication), made under ``<data>/auth`` on the first start and kept; this user's
    client credentials are named in the profile (``sortie.bus.auth``).
    """
    data_dir = data_dir.expanduser().resolve()
    tls_ca = tls.ca if tls is not None else None
    if not _isolation_ready():
        return 2
    try:
        # held until this process ends: the scheduler's and agent's dirs too, so a standalone
        # daemon given one of them is refused as well
        locks = [lock_data_dir(d, "sortie up") for d in _owned_dirs(data_dir)]
        _close_private_dirs(data_dir)
        authority = init_authority(data_dir / "auth", auth_ttl_s) if auth_ttl_s else None
        check_can_start(data_dir / "nats", host, port)  # before anything touches the store
        if authority is not None:
            adopt_unauthenticated_store(data_dir / "nats", authority.account.public_key)
        if store_limit is None:
            store_limit = derive_store_limit(data_dir / "nats" / "jetstream")
        broker = start_broker(
            data_dir / "nats",
            host=host,
            port=port,
            sync_always=sync_always,
            auth_conf=authority.broker_conf if authority else None,
            tls=tls,
            die_with_parent=True,  # from the main thread: a SIGKILLed `sortie up` takes it
            store_limit=store_limit,
        )
    except (BrokerError, AuthError, DataDirLocked, OSError) as exc:
        print(f"sortie up: {exc}", flush=True)
        return 2
    pid = os.getpid()
    client_creds = authority.client_creds if authority else None
    try:
        dashboard = dashboard_child(broker.url, dashboard_port, creds=client_creds, tls_ca=tls_ca)
    except WebError as exc:
        broker.stop()
        print(f"sortie up: {exc}", flush=True)
        return 2
    try:
        write_profile(
            broker.url,
            data_dir,
            pid,
            creds=client_creds,
            tls_ca=tls_ca,
            dashboard_url=dashboard.url if dashboard else None,
        )
        _run(
            _serve_until_signalled(
                broker.url,
                data_dir,
                gpu_pool=gpu_pool,
                authority=authority,
                tls_ca=tls_ca,
                metrics=metrics,
                store_limit=store_limit,
                bounds=bounds,
                dashboard=dashboard,
                schedulers=schedulers,
            )
        )
    finally:
        if dashboard is not None:
            dashboard.stop()
        remove_profile_if_ours(pid, broker.url)
        broker.stop()
        for lock in locks:
            lock.release()
        print("Sortie stopped", flush=True)
    return 0


def _isolation_ready() -> bool:
    """Say once how the local agent's runs are isolated if they are not (False: they cannot
    be as configured; the message says what to do)."""
    from sortie.agents.executors.sandbox import IsolationError, make_isolation

    try:
        isolation = make_isolation(run_user=None, run_uids=None)
    except IsolationError as exc:
        print(f"sortie up: {exc}", flush=True)
        return False
    if isolation.mode == "none":
        print(
            "sortie up: warning: runs are not isolated (this kernel has no Landlock and the "
            "agent is not root): a run can read this installation's credentials",
            flush=True,
        )
    return True


def _close_private_dirs(data_dir: Path) -> None:
    """Others (a run's user among them) may pass the data dir and the scheduler's (its
    cluster nodes' agent dirs are there) to a run's own directory, not list them, nor enter
    the broker's store; run secrets and keys are in owner-only dirs of their own."""
    for passable in (data_dir, data_dir / "scheduler"):
        passable.mkdir(exist_ok=True)
        passable.chmod(0o711)
    (data_dir / "nats").mkdir(exist_ok=True)
    (data_dir / "nats").chmod(0o700)


def _owned_dirs(data_dir: Path) -> list[Path]:
    """The directories `sortie up` locks: its own, its scheduler's and its agent's."""
    return [data_dir, data_dir / "scheduler", data_dir / "agent"]


async def _serve_until_signalled(  # noqa: PLR0913 - one keyword per setting of `sortie up`
    url: str,
    data_dir: Path,
    *,
    gpu_pool: tuple[int, ...],
    authority: Authority | None,
    tls_ca: Path | None,
    metrics: tuple[str, int] | None,
    store_limit: int,
    bounds: Bounds | None = None,
    dashboard: Dashboard | None = None,
    schedulers: int = 1,
) -> None:
    """`serve` until SIGINT or SIGTERM; print the ready line once the scheduler answers
    (and the dashboard, if any, listens)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(
        serve(
            url,
            data_dir,
            stop,
            gpu_pool=gpu_pool,
            authority=authority,
            tls_ca=tls_ca,
            metrics=metrics,
            store_limit=store_limit,
            bounds=bounds,
            schedulers=schedulers,
        )
    )
    # Announce once the scheduler answers: then `sortie run submit` works.
    client_creds = authority.client_creds if authority else None
    await _await_ready(url, runner, BusAuth(creds=client_creds, tls_ca=tls_ca))
    shown = ""
    if dashboard is not None:
        shown = f"; dashboard: {dashboard.url}" if await dashboard.ready() else dashboard.failed()
    print(
        f"Sortie ready at {url} (data {data_dir}, profile {profile_path()}, store limit "
        f"{human(store_limit)}){shown}; Ctrl-C stops it",
        flush=True,
    )
    await runner


async def _await_ready(url: str, runner: asyncio.Task[None], auth: BusAuth) -> None:
    from sortie.client.client import Client, ClientError

    while not runner.done():
        with contextlib.suppress(ClientError, OSError, RuntimeError):
            async with await Client.connect(
                url, name="sortie-up-probe", creds=auth.creds, tls_ca=auth.tls_ca
            ) as c:
                await c.targets()
                return
        await asyncio.sleep(0.1)
    runner.result()


@dataclass
class Dashboard:
    """`sortie up`'s dashboard: `sortie web` as a child process that dies with this one."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]

    async def ready(self, timeout_s: float = 30.0) -> bool:
        """Whether it listens (False: it exited, or did not listen in time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return True
        return False

    def failed(self) -> str:
        code = self.proc.poll()
        why = f"it exited with {code}" if code is not None else "it did not listen in time"
        return f"; dashboard: not served ({why}; its errors are above)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def dashboard_child(
    url: str, port: int | None, *, creds: Path | None, tls_ca: Path | None
) -> Dashboard | None:
    """Start `sortie up`'s dashboard on 127.0.0.1:``port`` (see ``up``), or None."""
    from sortie.web.server import bind
    from sortie.web.settings import DEFAULT_PORT, WebSettings

    if port == 0:
        return None
    settings = WebSettings(port=port or DEFAULT_PORT)
    try:
        bind(settings).close()  # taken? (said now, before anything starts)
    except WebError as exc:
        if port is not None:
            raise
        print(f"sortie up: warning: no dashboard: {exc}", flush=True)
        return None
    cmd = [sys.executable, "-m", "sortie.cli", "--url", url]
    cmd += ["--creds", str(creds)] if creds is not None else []
    cmd += ["--tls-ca", str(tls_ca)] if tls_ca is not None else []
    cmd += ["web", "--port", str(settings.port), "--open-on-loopback"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    return Dashboard(url=settings.base_url(), port=settings.port, proc=proc)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run with uvloop (chosen here, in the entry point only)."""
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
