"""`sortie up --schedulers N`: N schedulers as child processes of `sortie up`, each started
again when it exits (as systemd's ``Restart=`` does), so one leads and the others stand by.

For trying active/standby on one machine, and for tests: kill the leader's process (its pid
is in `sortie status`) and a standby takes over within the lease; the killed one is started
again and stands by. Each child is `sortie scheduler` with `sortie up`'s settings
(:func:`scheduler_argv`) and a data directory of its own, ``DATA/scheduler-K``; with
``--metrics-port P``, child K serves its metrics on ``P + K - 1``. The children die with
`sortie up` (``die_with_parent``), also when it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys

import structlog

from sortie.bus.children import die_with_parent
from sortie.bus.retention import DAY_S, GB
from sortie.scheduler.blob_gc import HOUR_S
from sortie.scheduler.daemon import SchedulerConfig

log = structlog.get_logger("sortie.up")

RESTART_PAUSE_S = 1.0  # between a child's exit and its next start
STOP_GRACE_S = 20.0  # a stopping child's time to release its lease before SIGKILL
MAX_SCHEDULERS = 5


def child_config(config: SchedulerConfig, k: int) -> SchedulerConfig:
    """Scheduler ``k`` (from 1) of ``config``: its own data directory and metrics port."""
    assert config.data_dir is not None
    port = config.metrics_port
    return dataclasses.replace(
        config,
        data_dir=config.data_dir.with_name(f"{config.data_dir.name}-{k}"),
        metrics_port=port + k - 1 if port else port,
    )


def scheduler_argv(config: SchedulerConfig) -> list[str]:
    """The `sortie scheduler` command line that runs ``config`` (the settings `sortie up`
    gives its scheduler; timing and replicas keep their defaults there too)."""
    argv = [sys.executable, "-m", "sortie.cli", "--url", config.url]
    if config.auth is not None and config.auth.creds is not None:
        argv += ["--creds", str(config.auth.creds)]
    if config.auth is not None and config.auth.tls_ca is not None:
        argv += ["--tls-ca", str(config.auth.tls_ca)]
    argv += ["scheduler", "--data-dir", str(config.data_dir)]
    argv += ["--creds-ttl", str(int(config.creds_ttl_s))]
    argv += ["--leader-lease", str(config.leader_lease_s)]
    if config.account_key is not None:
        argv += ["--account-key", str(config.account_key)]
    if config.gpu_pool:
        argv += ["--gpu-pool", ",".join(str(i) for i in config.gpu_pool)]
    if config.store_limit is not None:
        argv += ["--store-limit", str(config.store_limit)]
    if config.metrics_port is not None:
        argv += ["--metrics-host", config.metrics_host, "--metrics-port", str(config.metrics_port)]
    r, gc = config.retention, config.blob_gc
    argv += ["--logs-max-age-days", str(r.logs_max_age_s / DAY_S)]
    argv += ["--logs-max-gb", str(r.logs_max_bytes / GB)]
    argv += ["--metrics-max-age-days", str(r.metrics_max_age_s / DAY_S)]
    argv += ["--metrics-max-gb", str(r.metrics_max_bytes / GB)]
    argv += ["--blob-gc-every-hours", str(gc.every_s / HOUR_S)]
    argv += ["--blob-grace-hours", str(gc.grace_s / HOUR_S)]
    return argv


async def supervise(argv: list[str], name: str, stop: asyncio.Event) -> None:
    """Run ``argv`` until ``stop`` is set, starting it again whenever it exits."""
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            proc = await asyncio.create_subprocess_exec(*argv, preexec_fn=die_with_parent)
            log.info("scheduler started", name=name, pid=proc.pid)
            exited = asyncio.create_task(proc.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await _stop(proc, exited)
                return
            log.warning("scheduler exited; starting it again", name=name, code=exited.result())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_PAUSE_S)
    finally:
        stopping.cancel()


async def _stop(proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
    """SIGTERM (a clean stop releases the lease), then SIGKILL after the grace."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(exited), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await exited
