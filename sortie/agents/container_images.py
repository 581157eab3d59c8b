"""Environment images: a system-managed Python environment on top of a base image, built once
per content hash and kept as a local image.

The tag is ``localhost/sortie-env:<hash[:16]>``; the hash covers the base image's ID (so a
changed base image gives a new environment image), the normalised environment
(``agents.envcache.normalise``) and a salt. A present tag is used as is; its label
``sortie.python`` names the interpreter inside it.

A build assumes no network inside containers and no registry, only the engine on the agent
host (its bind mounts are host paths):

1. a throwaway *probe* container from the base image finds its Python (``python3`` or
   ``python`` on its PATH, 3.8 or newer), machine and libc, and whether the host's ``uv``
   binary runs in it;
2. on the host, ``pip download`` fetches wheels for that Python and platform (binary only)
   into a temporary directory (under ``wheels_dir`` when given);
3. a *build* container from the base image, with the wheels bind-mounted read-only at
   ``/sortie/wheels`` and ``uv`` at ``/sortie/bin/uv``, creates the venv ``/opt/sortie/env``
   with the image's Python and installs the requirements offline (with uv, or where uv cannot
   run there, e.g. on musl, with ``python -m venv`` and pip run from its downloaded wheel);
   its output streams line by line through ``log``;
4. the build container is committed to the tag, with labels ``sortie.env_hash`` and
   ``sortie.python``, and the base image's entrypoint, command and user restored.

Probe and build containers carry the label ``sortie.build=1`` and are always removed, also
when a build fails or is cancelled (the committed image has that label blanked, since
containers inherit their image's labels).

Concurrency: callers in one process building the same tag share an asyncio lock per tag and
re-check after taking it; across processes an ``flock`` on
``/tmp/sortie-image-locks/<hash[:16]>.lock`` does the same.

Not supported yet: conda packages in an environment image (``ImageError`` says so).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import msgspec
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from sortie.agents.engine import remove_container
from sortie.agents.envcache import file_lock, find_uv, normalise, stream_command
from sortie.proto import messages as m
from sortie.proto.run_errors import ErrorKind

HASH_SALT = "img-v1"
REPOSITORY = "localhost/sortie-env"
ENV_PREFIX = "/opt/sortie/env"
ENV_PYTHON = f"{ENV_PREFIX}/bin/python"
WHEELS_MOUNT = "/sortie/wheels"
UV_MOUNT = "/sortie/bin/uv"
LABEL_BUILD = "sortie.build"
LABEL_HASH = "sortie.env_hash"
LABEL_PYTHON = "sortie.python"
LABEL_BASE = "sortie.base_image_id"
MIN_PYTHON = (3, 8)
OLDEST_MANYLINUX = 17  # manylinux2014 == manylinux_2_17: the oldest glibc we fetch wheels for
TAIL_LINES = 30
LOCK_DIR = Path("/tmp/sortie-image-locks")  # noqa: S108 - a lock dir, not data


class ImageError(Exception):
    """The environment image cannot be provided; the message says what and what to do."""

    kind: ErrorKind = ErrorKind.ENVIRONMENT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class EnvImage:
    tag: str
    python: str  # interpreter path inside the image
    base_id: str = ""  # the engine's ID of the base image it was made from (ensure_env_image)


# --- the pure part --------------------------------------------------------------------------


class _HashInput(msgspec.Struct, frozen=True, kw_only=True):
    salt: str
    base_image_id: str
    env: m.PythonEnvironment


def image_hash(base_image_id: str, py: m.PythonEnvironment) -> str:
    """sha256 hex over the base image's ID, the normalised environment and the salt (pure)."""
    data = msgspec.json.encode(
        _HashInput(salt=HASH_SALT, base_image_id=base_image_id, env=normalise(py))
    )
    return hashlib.sha256(data).hexdigest()


def image_tag(digest: str) -> str:
    return f"{REPOSITORY}:{digest[:16]}"


@dataclass(frozen=True)
class Probe:
    """What the probe container found in the base image."""

    python: str | None = None  # path of python3/python on the image's PATH
    version: tuple[int, int] | None = None
    machine: str = ""  # platform.machine(), e.g. x86_64
    glibc: tuple[int, int] | None = None  # None: not glibc (musl) or unknown
    venv: bool = False  # the venv module imports
    uv_runs: bool = False  # the host's uv binary runs in the image


PROBE_SCRIPT = f"""
PY=$(command -v python3 || command -v python) || {{ echo "sortie-probe python="; exit 0; }}
echo "sortie-probe python=$PY"
"$PY" -c 'import sys, platform
print("sortie-probe version=%d.%d" % tuple(sys.version_info[:2]))
print("sortie-probe machine=" + platform.machine())
print("sortie-probe libc=" + "-".join(platform.libc_ver()))'
"$PY" -c 'import venv' >/dev/null 2>&1 && echo "sortie-probe venv=1"
{UV_MOUNT} --version >/dev/null 2>&1 && echo "sortie-probe uv=1"
exit 0
"""


def parse_probe(output: str) -> Probe:
    """The probe script's ``sortie-probe key=value`` lines as a Probe (pure)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("sortie-probe "):
            key, _, value = line.removeprefix("sortie-probe ").partition("=")
            found[key.strip()] = value.strip()
    version = _two_ints(found.get("version", ""), ".")
    libc_name, _, libc_version = found.get("libc", "").partition("-")
    return Probe(
        python=found.get("python") or None,
        version=version,
        machine=found.get("machine", ""),
        glibc=_two_ints(libc_version, ".") if libc_name == "glibc" else None,
        venv=found.get("venv") == "1",
        uv_runs=found.get("uv") == "1",
    )


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _two_ints(text: str, sep: str) -> tuple[int, int] | None:
    parts = text.split(sep)
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def check_probe(probe: Probe, base_image: str, py: m.PythonEnvironment) -> None:
    """Raise ImageError if the environment cannot be built on this image (pure)."""
    if probe.python is None:
        raise ImageError(
            f"the image {base_image} has no Python (neither python3 nor python is on its PATH), "
            "so a system-managed environment cannot be built on it: use an image with python3, "
            "or a user-managed environment"
        )
    if probe.version is None or probe.version < MIN_PYTHON:
        found = "an unknown version" if probe.version is None else _dotted(probe.version)
        raise ImageError(
            f"the image {base_image} has Python {found} at {probe.python}, older than "
            f"{'.'.join(map(str, MIN_PYTHON))}: use an image with python3 >= 3.8, or a "
            "user-managed environment"
        )
    wanted = py.python_version.strip() if py.python_version else ""
    if re.fullmatch(r"\d+(\.\d+)*", wanted):
        have = [str(probe.version[0]), str(probe.version[1])]
        if wanted.split(".")[:2] != have[: len(wanted.split("."))]:
            raise ImageError(
                f"the environment asks for Python {wanted} but the image {base_image} has "
                f"Python {'.'.join(have)} (no Python can be downloaded into an image): use an "
                "image with that Python, or drop python_version"
            )
    if not probe.uv_runs and not probe.venv:
        raise ImageError(
            f"the image {base_image} cannot build a venv: the agent's uv binary does not run in "
            f"it (e.g. a musl libc) and its Python ({probe.python}) lacks the venv module: use an "
            "image whose Python has venv (e.g. with python3-venv installed), or a user-managed "
            "environment"
        )


def wheel_platforms(machine: str, glibc: tuple[int, int] | None) -> list[str]:
    """The ``pip download --platform`` values for an image (pure).

    glibc 2.N: manylinux_2_17 .. manylinux_2_N (pip does not expand a manylinux tag to older
    ones by itself) plus the legacy manylinux2014 alias; otherwise musllinux 1.1 and 1.2.
    Pure-Python wheels (``any``) always qualify.
    """
    arch = machine or "x86_64"
    if glibc is None:
        platforms = [f"musllinux_1_1_{arch}", f"musllinux_1_2_{arch}"]
    else:
        newest = max(glibc[1], OLDEST_MANYLINUX) if glibc[0] == 2 else OLDEST_MANYLINUX
        platforms = [f"manylinux2014_{arch}"]
        platforms += [f"manylinux_2_{n}_{arch}" for n in range(OLDEST_MANYLINUX, newest + 1)]
    return [*platforms, "any"]


def download_argv(
    python_exe: str, version: tuple[int, int], platforms: list[str], dest: Path, reqs: list[str]
) -> list[str]:
    """``pip download`` of binary wheels for the image's Python and platform (pure)."""
    platform_args = [arg for p in platforms for arg in ("--platform", p)]
    return [
        python_exe, "-m", "pip", "download", "--only-binary=:all:",
        "--python-version", _dotted(version), "--implementation", "cp",
        *platform_args, "--dest", str(dest), *reqs,
    ]  # fmt: skip


# $1: the image's python, $2: "uv" or "pip", the rest: the requirements
BUILD_SCRIPT = f"""set -e
PY="$1"; MODE="$2"; shift 2
mkdir -p {Path(ENV_PREFIX).parent}
if [ "$MODE" = uv ]; then
  {UV_MOUNT} --no-cache venv --no-python-downloads --python "$PY" {ENV_PREFIX}
  if [ "$#" -gt 0 ]; then
    {UV_MOUNT} --no-cache pip install --offline --no-index --find-links {WHEELS_MOUNT} \\
      --link-mode copy --python {ENV_PYTHON} "$@"
  fi
else
  "$PY" -m venv --without-pip {ENV_PREFIX}
  if [ "$#" -gt 0 ]; then
    PIP=$(ls {WHEELS_MOUNT}/pip-*.whl | head -n 1)
    {ENV_PYTHON} "$PIP/pip" install --no-cache-dir --disable-pip-version-check \\
      --no-index --find-links {WHEELS_MOUNT} "$@"
  fi
fi
{ENV_PYTHON} -c 'import sys; print("environment ready: Python " + sys.version.split()[0])'
"""


def commit_changes(base_config: dict[str, Any], digest: str, base_id: str) -> list[str]:
    """Dockerfile-style changes for the commit (pure): our labels, and the base image's
    entrypoint, command and user back in place of the build container's."""
    changes = [
        f"LABEL {LABEL_HASH}={digest}",
        f"LABEL {LABEL_PYTHON}={ENV_PYTHON}",
        f"LABEL {LABEL_BASE}={base_id}",
        f"LABEL {LABEL_BUILD}=",
        f"ENTRYPOINT {json.dumps(base_config.get('Entrypoint') or [])}",
        f"CMD {json.dumps(base_config.get('Cmd') or [])}",
    ]
    if base_config.get("User"):
        changes.append(f"USER {base_config['User']}")
    return changes


# --- the engine-facing part -----------------------------------------------------------------


async def _inspect(docker: aiodocker.Docker, image: str) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = await docker.images.inspect(image)
    except DockerError as err:
        if err.status == 404:
            return None
        raise
    return info


async def image_present(docker: aiodocker.Docker, image: str) -> bool:
    return await _inspect(docker, image) is not None


async def image_id(docker: aiodocker.Docker, image: str) -> str | None:
    """The engine's ID of the image ``image`` names; None when it has no such image."""
    info = await _inspect(docker, image)
    return None if info is None else str(info["Id"])


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _tag_lock(tag: str) -> asyncio.Lock:
    per_loop = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(tag, asyncio.Lock())


def _file_lock(digest: str) -> contextlib.AbstractAsyncContextManager[None]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    return file_lock(LOCK_DIR / f"{digest[:16]}.lock", poll_s=0.2)


def _cached(info: dict[str, Any] | None, tag: str) -> EnvImage | None:
    if info is None:
        return None
    labels = (info.get("Config") or {}).get("Labels") or {}
    return EnvImage(tag=tag, python=labels.get(LABEL_PYTHON) or ENV_PYTHON)


async def ensure_env_image(
    docker: aiodocker.Docker,
    base_image: str,
    py: m.PythonEnvironment,
    *,
    log: Callable[[str], None],
    wheels_dir: Path | None = None,
) -> EnvImage:
    """The image with ``py`` (system-managed) built on ``base_image``: cached or built now.

    ``wheels_dir``: where the temporary wheel directory goes (the system's temp dir when not
    given); the engine must be able to bind-mount it.
    """
    if py.conda:
        raise ImageError(
            "conda packages in container environments are not supported yet: "
            f"{', '.join(py.conda)}; move them to the pip list, or use a base image that has "
            "them installed and a user-managed environment"
        )
    try:
        base = await _inspect(docker, base_image)
    except DockerError as err:
        raise ImageError(f"cannot inspect the image {base_image}: {err.message}") from None
    if base is None:
        raise ImageError(
            f"the image {base_image} is not present on this agent's container engine, and no "
            "registry is assumed to be reachable: load or import it there (docker load / podman "
            "load / podman import), or use an image that is present"
        )
    base_id = str(base["Id"])
    digest = image_hash(base_id, py)
    tag = image_tag(digest)
    try:
        found = _cached(await _inspect(docker, tag), tag)
        if found is None:
            lock = _tag_lock(tag)
            if lock.locked():
                log(f"waiting for the build of environment image {tag} already under way")
            async with lock, _file_lock(digest):
                found = _cached(await _inspect(docker, tag), tag)
                if found is None:
                    build = _Build(
                        docker=docker, base_image=base_image, base=base, py=normalise(py),
                        digest=digest, tag=tag, log=log, wheels_dir=wheels_dir,
                    )  # fmt: skip
                    return dataclasses.replace(await _build_logged(build), base_id=base_id)
    except DockerError as err:
        raise ImageError(
            f"the container engine failed while preparing the environment image {tag}: "
            f"{err.message}"
        ) from None
    log(f"using cached environment image {found.tag}")
    return dataclasses.replace(found, base_id=base_id)


@dataclass(frozen=True, kw_only=True)
class _Build:
    """One environment image to build: on which base image, with what, under which tag."""

    docker: aiodocker.Docker
    base_image: str  # as the user named it
    base: dict[str, Any]  # the engine's inspection of it
    py: m.PythonEnvironment  # normalised
    digest: str
    tag: str
    log: Callable[[str], None]
    wheels_dir: Path | None

    @property
    def base_id(self) -> str:
        return str(self.base["Id"])

    @property
    def base_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.base.get("Config") or {}
        return config

    @property
    def user(self) -> str | None:
        # a non-root image user may not write /opt; the committed image gets its user back
        return "0" if self.base_config.get("User") else None

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_BUILD: "1", LABEL_HASH: self.digest}


async def _build_logged(build: _Build) -> EnvImage:
    build.log(f"building environment image {build.tag} on {build.base_image}")
    started = time.monotonic()
    await _build(build)
    build.log(f"environment image {build.tag} ready ({time.monotonic() - started:.1f}s)")
    return EnvImage(tag=build.tag, python=ENV_PYTHON)


async def _build(build: _Build) -> None:
    """Probe the base image, fetch the wheels on the host, install them in a build container
    and commit it (steps 1-4 in the module's docstring)."""
    uv_bin = find_uv()
    probe = await _probe(build, uv_bin)
    assert probe.python is not None and probe.version is not None  # check_probe saw to it
    mode = "uv" if probe.uv_runs else "pip"
    build.log(
        f"image Python: {probe.python} ({_dotted(probe.version)}, {probe.machine}); "
        f"installing with {mode}"
    )
    with tempfile.TemporaryDirectory(prefix="sortie-wheels-", dir=build.wheels_dir) as tmp:
        wheels = Path(tmp)
        # readable by whichever user the engine maps the container's root to
        wheels.chmod(0o755)  # noqa: ASYNC240 - one local syscall, no wait
        platforms = wheel_platforms(probe.machine, probe.glibc)
        await _download_wheels(build, probe.version, platforms, wheels, with_pip=mode == "pip")
        binds = [f"{wheels}:{WHEELS_MOUNT}:ro", f"{uv_bin}:{UV_MOUNT}:ro"]
        cmd = [BUILD_SCRIPT, "sh", probe.python, mode, *build.py.pip]
        await _install_and_commit(build, cmd, binds)


async def _probe(build: _Build, uv_bin: str) -> Probe:
    """The base image's Python, machine and libc, from a throwaway container (ImageError when
    it has no usable Python)."""
    lines: list[str] = []
    config = _container_config(
        build.base_id, ["/bin/sh", "-c"], [PROBE_SCRIPT],
        labels=build.labels, binds=[f"{uv_bin}:{UV_MOUNT}:ro"], user=build.user,
    )  # fmt: skip
    async with _container(build.docker, config, build.base_image) as container:
        code = await _start_and_stream(container, lines.append)
    if code != 0:
        raise ImageError(
            f"probing the image {build.base_image} for Python failed (exit code {code}; it "
            "needs /bin/sh): " + "\n".join(lines[-TAIL_LINES:])
        )
    probe = parse_probe("\n".join(lines))
    check_probe(probe, build.base_image, build.py)
    return probe


async def _download_wheels(
    build: _Build,
    version: tuple[int, int],
    platforms: list[str],
    wheels: Path,
    *,
    with_pip: bool,
) -> None:
    """The environment's wheels for the image's Python and platform into ``wheels``; and pip's
    own when the image installs with pip."""
    if build.py.pip:
        await _download(
            download_argv(sys.executable, version, platforms, wheels, build.py.pip), build.log
        )
    if with_pip:
        # pip itself, run from its wheel (a venv made --without-pip needs no ensurepip)
        pip_only = download_argv(sys.executable, version, platforms, wheels, [])
        await _download([*pip_only, "--no-deps", "pip"], build.log)


async def _install_and_commit(build: _Build, cmd: list[str], binds: list[str]) -> None:
    """Run the build script in a container from the base image and commit it to the tag."""
    config = _container_config(
        build.base_id, ["/bin/sh", "-c"], cmd,
        labels=build.labels, binds=binds, user=build.user,
    )  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def out(line: str) -> None:
        tail.append(line)
        build.log(line)

    async with _container(build.docker, config, build.base_image) as container:
        code = await _start_and_stream(container, out)
        if code != 0:
            raise ImageError(
                f"building the environment image {build.tag} on {build.base_image} failed "
                f"(exit code {code}); last lines of the build output:\n" + "\n".join(tail)
            )
        await build.docker._query_json(
            "commit",
            method="POST",
            params={
                "container": container.id,
                "repo": REPOSITORY,
                "tag": build.tag.rsplit(":", 1)[1],
                "pause": "false",
                "comment": f"sortie environment {build.digest[:16]} on {build.base_image}",
                "changes": "\n".join(
                    commit_changes(build.base_config, build.digest, build.base_id)
                ),
            },
            data="{}",  # Podman's compat endpoint wants a (possibly empty) JSON body
        )


def _container_config(
    image: str,
    entrypoint: list[str],
    cmd: list[str],
    *,
    labels: dict[str, str],
    binds: list[str],
    user: str | None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Image": image,
        "Entrypoint": entrypoint,
        "Cmd": cmd,
        "Labels": labels,
        "HostConfig": {"Binds": binds, "NetworkMode": "none"},
    }
    if user is not None:
        config["User"] = user
    return config


@contextlib.asynccontextmanager
async def _container(
    docker: aiodocker.Docker, config: dict[str, Any], base_image: str
) -> AsyncIterator[DockerContainer]:
    """A created container, removed on the way out whatever happens."""
    try:
        container = await docker.containers.create(config)
    except DockerError as err:
        raise ImageError(
            f"cannot create a container from the image {base_image}: {err.message}"
        ) from None
    try:
        yield container
    finally:
        removal = asyncio.ensure_future(remove_container(container))
        try:
            await asyncio.shield(removal)
        except asyncio.CancelledError:
            await removal  # cancelled again while cleaning up: finish the removal first
            raise


async def _start_and_stream(container: DockerContainer, on_line: Callable[[str], None]) -> int:
    """Start the container, pass its output on line by line as it comes; the exit code."""
    try:
        await container.start()
    except DockerError as err:
        raise ImageError(f"the build container did not start: {err.message}") from None
    pending = ""
    async for chunk in container.log(stdout=True, stderr=True, follow=True):
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            on_line(line.rstrip("\r"))
    if pending:
        on_line(pending.rstrip("\r"))
    result = await container.wait()
    return int(result.get("StatusCode", -1))


async def _download(argv: list[str], log: Callable[[str], None]) -> None:
    """Run ``pip download`` on the host, streaming its output; ImageError on failure."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_PROGRESS_BAR="off", NO_COLOR="1")  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    log("$ " + " ".join(argv))
    try:
        code = await stream_command(argv, log, tail, env=env)
    except OSError as exc:
        raise ImageError(f"cannot run pip on the agent host ({argv[0]}): {exc}") from None
    if code != 0:
        raise ImageError(
            f"downloading wheels on the agent host failed (pip exited with code {code}); only "
            "binary wheels for the image's Python and platform can go into an environment "
            "image. Last lines of pip's output:\n" + "\n".join(tail)
        )
