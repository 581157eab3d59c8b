"""Run one launch in a container through the engine's API (aiodocker; no docker CLI).

The mechanics under :mod:`agents.executors.container` (which decides the image and the
mounts). Same contract as :mod:`agents.executors.process`: ``wait()`` gives an :class:`Outcome`,
``stop(reason, grace_s)`` writes the reason, sends SIGTERM to the container, waits the grace
and then SIGKILLs it. Output is followed live (stdout and stderr apart). Exit codes an engine
reports as ``128 + N`` for a signal the executor sent are given back as ``-N``, as for a
process run. The container is removed when the execution ends: a run leaves none behind.

Note: the command is the container's PID 1, and PID 1 ignores signals it installs no handler
for; so a script without a SIGTERM handler is killed only after the grace (a process run
dies at the SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import structlog

from sortie.agents.engine import EngineError, check_engine, open_docker, remove_container
from sortie.agents.executors import Launch, OnOutput, Outcome, OutputStream, StopWord
from sortie.agents.publisher import LineSplitter
from sortie.proto.run_errors import ErrorKind

DRAIN_AFTER_EXIT_S = 2.0
LABEL_RUN_ID = "sortie.run_id"
LABEL_ATTEMPT = "sortie.attempt"
LABEL_AGENT = "sortie.agent"
LABEL_INCARNATION = "sortie.incarnation"
SUPPORTED_ARGUMENTS = (
    "--ipc=host|private, --cap-add=CAP, --ulimit=NAME=SOFT[:HARD], --env=KEY=VALUE"
)
_SIGNALS = {"SIGTERM": 15, "SIGKILL": 9}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

log = structlog.get_logger()


# --- pure: options and the container's configuration ----------------------------------------


@dataclass(frozen=True)
class Mount:
    """A host path bound into a container (a directory, a file or a named pipe)."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """How a launch runs in a container; ``Launch.argv`` and ``Launch.env`` are as seen
    inside it (no agent environment leaks in: only the run's variables)."""

    image: str
    mounts: list[Mount]
    workdir: str
    gpus: list[int] | None = None  # host GPU indices, passed as device requests
    shm_size: str | None = None  # e.g. "2g"
    arguments: list[str] = field(default_factory=list)  # DockerSection.arguments
    labels: dict[str, str] = field(default_factory=dict)
    docker_host: str = "unix:///var/run/docker.sock"


@dataclass
class HostOptions:
    """What ``DockerSection.arguments`` asked for, validated."""

    ipc: str | None = None
    cap_add: list[str] = field(default_factory=list)
    ulimits: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _refuse(what: str) -> EngineError:
    return EngineError(
        f"docker argument {what}: the supported ones are {SUPPORTED_ARGUMENTS}",
        kind=ErrorKind.START,
    )


def parse_arguments(arguments: list[str]) -> HostOptions:
    """``--opt=value`` (or ``--opt value``) options -> :class:`HostOptions` (pure).

    Raises :class:`EngineError` (kind "start") naming an unsupported or malformed option."""
    opts = HostOptions()
    items = list(arguments)
    i = 0
    while i < len(items):
        raw = items[i]
        i += 1
        name, eq, value = raw.partition("=")
        if name not in ("--ipc", "--cap-add", "--ulimit", "--env", "-e"):
            raise _refuse(f"{raw!r} is not supported")
        if not eq:
            if i >= len(items):
                raise _refuse(f"{raw!r} needs a value")
            value = items[i]
            i += 1
        if name == "--ipc":
            if value not in ("host", "private"):
                raise _refuse(f"--ipc={value!r} is not supported (host or private)")
            opts.ipc = value
        elif name == "--cap-add":
            if not re.fullmatch(r"[A-Za-z_]+", value):
                raise _refuse(f"--cap-add={value!r} is not a capability name")
            opts.cap_add.append(value.upper())
        elif name == "--ulimit":
            m = re.fullmatch(r"([a-z]+)=(-?\d+)(?::(-?\d+))?", value)
            if m is None:
                raise _refuse(f"--ulimit={value!r} is not NAME=SOFT[:HARD]")
            soft = int(m.group(2))
            hard = int(m.group(3)) if m.group(3) is not None else soft
            opts.ulimits.append({"Name": m.group(1), "Soft": soft, "Hard": hard})
        else:
            key, has_eq, val = value.partition("=")
            if not key or not has_eq:
                raise _refuse(f"--env={value!r} is not KEY=VALUE")
            opts.env[key] = val
    return opts


def parse_size(size: str | None) -> int | None:
    """``"2g"`` -> bytes (pure); raises :class:`EngineError` (kind "start") when malformed."""
    if size is None:
        return None
    m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", size.strip().lower())
    if m is None:
        raise EngineError(
            f"docker shm_size {size!r} is not a size: write e.g. '512m' or '2g'",
            kind=ErrorKind.START,
        )
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def container_config(launch: Launch, spec: ContainerSpec, opts: HostOptions) -> dict[str, Any]:
    """The engine's create-container body (pure)."""
    env = {**launch.env, **opts.env}
    host: dict[str, Any] = {
        "Mounts": [
            {
                "Type": "bind",
                "Source": str(mnt.source),
                "Target": mnt.target,
                "ReadOnly": mnt.read_only,
            }
            for mnt in spec.mounts
        ],
        "AutoRemove": False,  # removed by the executor once the exit code is read
    }
    shm = parse_size(spec.shm_size)
    if shm is not None:
        host["ShmSize"] = shm
    if opts.ipc is not None:
        host["IpcMode"] = opts.ipc
    if opts.cap_add:
        host["CapAdd"] = list(opts.cap_add)
    if opts.ulimits:
        host["Ulimits"] = list(opts.ulimits)
    if spec.gpus:
        host["DeviceRequests"] = [
            {
                "Driver": "nvidia",
                "DeviceIDs": [str(i) for i in spec.gpus],
                "Capabilities": [["gpu"]],
            }
        ]
    return {
        "Image": spec.image,
        "Cmd": list(launch.argv),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "WorkingDir": spec.workdir,
        "Labels": dict(spec.labels),
        "AttachStdin": False,
        "OpenStdin": False,
        "Tty": False,
        "HostConfig": host,
    }


def missing_image_message(image: str) -> str:
    return (
        f"image {image} is not on this agent's engine and no registry may be reachable: "
        "load or build it there (e.g. `podman load`/`podman import`, `docker load`), "
        "or use an image that is present"
    )


def exit_code_of(status: int, signals_sent: set[int], oom_killed: bool = False) -> int:
    """The engine's status -> the process executor's convention (negative: that signal)."""
    if oom_killed and status == 128 + 9:
        return -9
    if status > 128 and status - 128 in signals_sent:
        return -(status - 128)
    return status


def container_name(labels: dict[str, str]) -> str:
    base = f"sortie-{labels.get(LABEL_RUN_ID, 'run')}-{labels.get(LABEL_ATTEMPT, '0')}"
    clean = re.sub(r"[^a-zA-Z0-9_.-]", "-", base)[:100]
    return f"{clean}-{secrets.token_hex(3)}"


# --- the engine ------------------------------------------------------------------------------


async def check_image(docker: aiodocker.Docker, image: str) -> str:
    """The engine's ID of ``image``; raise :class:`EngineError` (kind "environment") when it
    is not on the engine."""
    try:
        info = await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            raise EngineError(missing_image_message(image)) from None
        raise EngineError(f"cannot inspect image {image}: {exc.message}") from exc
    return str(info["Id"])


def write_stop_reason_in_place(path: Path | None, word: StopWord) -> None:
    """Like :func:`agents.executors.write_stop_reason`, but into the same inode: the file is
    bind-mounted into the container, and a rename would leave the container the old file."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.write_text(word + "\n")


async def start_container(
    launch: Launch, spec: ContainerSpec, on_output: OnOutput
) -> ContainerExecution:
    """Create and start the container; raise :class:`EngineError` when it cannot be."""
    opts = parse_arguments(spec.arguments)
    config = container_config(launch, spec, opts)
    docker = open_docker(spec.docker_host)
    try:
        await check_engine(docker, spec.docker_host)
        await check_image(docker, spec.image)
        try:
            container = await docker.containers.create(config, name=container_name(spec.labels))
        except aiodocker.DockerError as exc:
            raise EngineError(
                f"the engine refused to create the container: {exc.message}", kind=ErrorKind.START
            ) from exc
        try:
            await container.start()
        except aiodocker.DockerError as exc:
            await remove_container(container)
            raise EngineError(
                f"the engine could not start the container: {exc.message}", kind=ErrorKind.START
            ) from exc
    except BaseException:
        await docker.close()
        raise
    return ContainerExecution(docker, container, launch, on_output)


class ContainerExecution:
    def __init__(
        self,
        docker: aiodocker.Docker,
        container: aiodocker.containers.DockerContainer,
        launch: Launch,
        on_output: OnOutput,
    ) -> None:
        self.docker = docker
        self.container = container
        self.id = container.id
        self._launch = launch
        self._started = time.monotonic()
        self._stopped = False
        self._timed_out = False
        self._signals_sent: set[int] = set()
        self._terminating: asyncio.Task[None] | None = None
        self._exit = asyncio.create_task(self._wait_exit())
        self._readers = [
            asyncio.create_task(_follow(container, "stdout", on_output, launch.output_room)),
            asyncio.create_task(_follow(container, "stderr", on_output, launch.output_room)),
        ]

    async def _wait_exit(self) -> int:
        result = await self.container.wait()
        return int(result.get("StatusCode", -1))

    async def _signal(self, name: str) -> None:
        self._signals_sent.add(_SIGNALS[name])
        try:
            await self.container.kill(signal=name)
        except aiodocker.DockerError as exc:  # already gone: nothing to signal
            log.debug("container signal not delivered", container=self.id, error=exc.message)

    async def _terminate(self, grace_s: float) -> None:
        await self._signal("SIGTERM")
        try:
            await asyncio.wait_for(asyncio.shield(self._exit), grace_s)
        except TimeoutError:
            await self._signal("SIGKILL")
            await asyncio.shield(self._exit)

    def _begin_terminate(self, reason: StopWord, grace_s: float | None) -> asyncio.Task[None]:
        if self._terminating is None:
            write_stop_reason_in_place(self._launch.stop_reason_file, reason)  # before SIGTERM
            grace = self._launch.kill_grace_s if grace_s is None else grace_s
            self._terminating = asyncio.create_task(self._terminate(grace))
        return self._terminating

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        if not self._exit.done():
            self._stopped = True
            await asyncio.shield(self._begin_terminate(reason, grace_s))

    async def wait(self) -> Outcome:
        limit = self._launch.max_duration_s
        oom = False
        try:
            if limit is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._exit), limit)
                except TimeoutError:
                    if not self._stopped:
                        self._timed_out = True
                    await self._begin_terminate("timeout", None)
            status = await asyncio.shield(self._exit)
            if self._terminating is not None:
                await self._terminating
            await asyncio.wait(self._readers, timeout=DRAIN_AFTER_EXIT_S)
            with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError):
                state = (await self.container.show()).get("State", {})
                oom = bool(state.get("OOMKilled"))
        finally:
            for task in self._readers:
                task.cancel()
            if not self._exit.done():
                await self._signal("SIGKILL")
                self._exit.cancel()
            await remove_container(self.container)
            await self.docker.close()
        return Outcome(
            exit_code=exit_code_of(status, self._signals_sent, oom),
            timed_out=self._timed_out,
            stopped=self._stopped,
            duration_s=time.monotonic() - self._started,
        )


async def _follow(
    container: aiodocker.containers.DockerContainer,
    stream: OutputStream,
    on_output: OnOutput,
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    splitter = LineSplitter()
    try:
        async for chunk in container.log(
            stdout=stream == "stdout", stderr=stream == "stderr", follow=True
        ):
            for line in splitter.feed(chunk.encode("utf-8", errors="surrogateescape")):
                on_output(stream, line)
            if room is not None:
                await room()  # back-pressure through the engine's connection
    except (aiodocker.DockerError, aiohttp.ClientError) as exc:
        on_output(stream, f"[sortie: {stream} of the container no longer followed: {exc}]")
    for line in splitter.finish():
        on_output(stream, line)


async def remove_orphans(
    docker_host: str, agent_id: str, keep: set[tuple[str, int]] | None = None
) -> list[str]:
    """Remove this agent's labelled containers whose (run id, attempt) is not in ``keep``
    (at agent start: all of them); return the ids removed. Errors are logged, not raised."""
    keep = keep or set()
    removed: list[str] = []
    docker = open_docker(docker_host)
    try:
        containers = await docker.containers.list(
            all=True, filters={"label": [f"{LABEL_AGENT}={agent_id}"]}
        )
        for c in containers:
            labels = c._container.get("Labels") or {}
            try:
                key = (str(labels.get(LABEL_RUN_ID)), int(labels.get(LABEL_ATTEMPT, -1)))
            except ValueError:
                key = ("", -1)
            if key in keep:
                continue
            await remove_container(c)
            removed.append(c.id)
    except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        log.warning("orphaned containers not cleaned", error=str(exc))
    finally:
        await docker.close()
    return removed
