"""The agent host's container engine: where it is, whether it answers, how to talk to it.

The engine is a Docker-compatible API (Docker, or Podman's ``podman system service``) found
through ``DOCKER_HOST``, default the usual socket. The agent probes it at start and every
:data:`PROBE_INTERVAL_S` and advertises the answer in ``Heartbeat.container_engine``
(None: runs asking for docker are not placed here). A known engine stays advertised through
a few missed probes in a row (``agents.engine_health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from http import HTTPStatus
from typing import Any

import aiodocker
import aiohttp
import structlog
from aiodocker.containers import DockerContainer

from sortie.agents.executors import ExecutorError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# An engine under load can take seconds to answer /version while it serves containers well;
# a miss is not "down" either (agents.engine_health).
PROBE_TIMEOUT_S = 10.0
# A run placed here while the engine is busy waits this long for it to answer before failing.
CHECK_TIMEOUT_S = 2 * PROBE_TIMEOUT_S
PROBE_INTERVAL_S = 30.0
REMOVE_TIMEOUT_S = 30.0  # per engine call while removing a container

log = structlog.get_logger("sortie.agents.engine")


class EngineError(ExecutorError):
    """The container engine cannot be used; the message names the socket tried and what to do.

    ``kind`` is the run error kind it becomes (an engine that is down is the environment's
    fault, not the script's)."""


def docker_host(environ: dict[str, str] | None = None) -> str:
    """``DOCKER_HOST``, or the usual socket when it is unset or empty."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def unreachable_message(url: str, detail: str = "") -> str:
    """What a user reads when the engine at ``url`` does not answer (pure)."""
    why = f" ({detail})" if detail else ""
    return (
        f"the container engine at {url} cannot be reached{why}: start a Docker-compatible "
        "engine there (e.g. `podman system service --time=0 "
        f"{url}` or dockerd), or set DOCKER_HOST on the agent host to the engine's socket "
        "and restart the agent"
    )


def engine_name(version: dict[str, Any]) -> str:
    """``podman 4.3.1`` / ``docker 24.0.7`` from a /version answer (pure)."""
    components = version.get("Components") or []
    names = " ".join(str(c.get("Name", "")) for c in components if isinstance(c, dict))
    platform = version.get("Platform") or {}
    platform_name = str(platform.get("Name", "")) if isinstance(platform, dict) else ""
    product = "podman" if "podman" in f"{names} {platform_name}".lower() else "docker"
    return f"{product} {version.get('Version', '?')}"


# What asking an engine can raise: its refusal, a broken connection or one that never came
# (TimeoutError is an OSError), an answer that is not JSON (a ValueError)
ENGINE_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, OSError, ValueError)


def open_docker(url: str) -> aiodocker.Docker:
    """A client for the engine at ``url`` (connects lazily; call inside the event loop).

    Connecting is bounded (a dead socket fails fast); long operations (logs, wait) are not."""
    timeout = aiohttp.ClientTimeout(connect=PROBE_TIMEOUT_S, sock_connect=PROBE_TIMEOUT_S)
    return aiodocker.Docker(url=url, timeout=timeout)


async def probe_engine(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The engine's name and version (``podman 4.3.1``), or None when it does not answer.

    Never raises for what a URL or an engine can do wrong (see ``ENGINE_ERRORS``); cancellation
    goes through."""
    try:
        docker = open_docker(url)
    except (ValueError, aiodocker.DockerError):  # a malformed DOCKER_HOST (or ssh:// URL)
        return None
    try:
        async with asyncio.timeout(timeout_s):
            return engine_name(await docker.version())
    except ENGINE_ERRORS:  # TimeoutError is an OSError
        return None
    finally:
        with contextlib.suppress(Exception):
            await docker.close()


async def check_engine(docker: aiodocker.Docker, url: str) -> None:
    """Raise :class:`EngineError` naming ``url`` when the engine does not answer."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await docker.version()
    except TimeoutError as exc:
        raise EngineError(unreachable_message(url, "no answer")) from exc
    except ENGINE_ERRORS as exc:
        raise EngineError(unreachable_message(url, _short(exc))) from exc


def _short(exc: BaseException) -> str:
    if isinstance(exc, aiodocker.DockerError):
        return str(exc.message)
    return str(exc) or type(exc).__name__


async def remove_container(container: DockerContainer, timeout_s: float = REMOVE_TIMEOUT_S) -> bool:
    """Force-remove ``container`` (and its anonymous volumes) without ever waiting unbounded.

    An engine can leave a ``DELETE`` unanswered (seen with Podman's compat API): after
    ``timeout_s`` the container is killed and the removal asked once more, again bounded.
    True when it is gone; a failure is logged, never raised, so cleanup never blocks the
    caller for more than about three times ``timeout_s``."""
    errors = (aiodocker.DockerError, aiohttp.ClientError, TimeoutError)
    try:
        async with asyncio.timeout(timeout_s):
            await container.delete(force=True, v=True)
        return True
    except aiodocker.DockerError as exc:
        if exc.status == HTTPStatus.NOT_FOUND:
            return True
        first = str(exc)
    except errors as exc:
        first = str(exc) or type(exc).__name__
    log.warning("container removal did not finish; killing it and trying again",
                container=container.id, error=first)  # fmt: skip
    try:
        with contextlib.suppress(aiodocker.DockerError):
            async with asyncio.timeout(timeout_s):
                await container.kill(signal="SIGKILL")
        async with asyncio.timeout(timeout_s):
            await container.delete(force=True, v=True)
        return True
    except errors as exc:
        if isinstance(exc, aiodocker.DockerError) and exc.status == HTTPStatus.NOT_FOUND:
            return True
        log.warning("container not removed", container=container.id, error=str(exc))
        return False
