"""Python environments for runs, built once per content hash and cached.

User-managed: the given interpreter (or the agent's own) as is. System-managed: a venv built
with uv from the pip list, under ``<data_dir>/envs/<hash[:16]>``. Conda packages are built
with micromamba or conda when the host has one, else installed from PyPI with uv under the
same names (``agents.conda_pypi``). uv uses the host's system certificates (``UV_NATIVE_TLS``),
so a host behind a TLS-intercepting proxy whose CA the system trusts can build.

The venv is built in its final directory (console scripts in ``bin/`` carry absolute
shebangs, so a venv cannot be renamed after it is built); it counts as ready only once the
marker file ``.sortie-ready`` exists, which is written last. Builders hold an asyncio lock per
hash inside the process and an ``flock`` on ``<envs>/<hash>.lock`` across processes, and
re-check readiness after taking them; a failed or interrupted build is removed.

A run holds a shared ``flock`` on that lock file while it uses the environment
(:meth:`EnvCache.prepare_held`), and using an environment touches its marker: the cache's
garbage collection (``agents.disk_gc``) evicts the least recently used first, and never one
that is held.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from sortie.agents.conda_pypi import (
    CondaSpecError,
    no_conda_note,
    not_on_pypi,
    not_on_pypi_message,
    pip_requirement,
)
from sortie.proto import messages as m

HASH_SALT = "sortie-env-v1"
READY = ".sortie-ready"
TAIL_LINES = 30
HOLD_TRIES = 3


class EnvError(Exception):
    """The environment cannot be provided; the message says what and what to do."""


@dataclass(frozen=True)
class PreparedEnv:
    python: str  # interpreter the script runs with
    hash: str | None  # content hash (system-managed only)
    cached: bool


class _HashInput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    salt: str
    pip: list[str]
    conda: list[str]
    channels: list[str]
    python_version: str | None
    # "pypi": the conda packages came from PyPI (no conda on the host); omitted when empty,
    # so every other environment keeps the hash it always had
    conda_from: str = ""


def normalise(py: m.PythonEnvironment) -> m.PythonEnvironment:
    """The parts of a system-managed environment that decide its content (pure).

    pip requirements keep their order (it can matter to the resolver); conda packages are
    sorted; blank entries dropped, whitespace stripped.
    """
    pip = [p.strip() for p in py.pip if p.strip()]
    conda = sorted({c.strip() for c in py.conda if c.strip()})
    version = py.python_version.strip() if py.python_version else None
    # channel order is priority order: kept; channels only matter with conda packages
    channels = [c.strip() for c in py.channels if c.strip()] if conda else []
    return m.PythonEnvironment(
        channels=channels, user_managed=False, pip=pip, conda=conda, python_version=version or None
    )


def env_hash(py: m.PythonEnvironment, *, conda_from: str = "") -> str:
    """sha256 hex of the canonical encoding of the normalised environment (pure).

    ``conda_from="pypi"`` for conda packages installed from PyPI: a host that gets conda
    later builds the environment with conda rather than reuse that one."""
    import hashlib

    n = normalise(py)
    data = msgspec.json.encode(
        _HashInput(
            salt=HASH_SALT,
            pip=n.pip,
            conda=n.conda,
            channels=n.channels,
            python_version=n.python_version,
            conda_from=conda_from if n.conda else "",
        )
    )
    return hashlib.sha256(data).hexdigest()


def find_uv() -> str:
    import uv

    return str(uv.find_uv_bin())


class EnvHold:
    """A run's shared lock on its environment: closed when the run ends, or when nothing
    refers to it any more (a run refused after preparing)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class EnvCache:
    def __init__(self, root: Path, *, uv_bin: str | None = None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0
        self._uv = uv_bin
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def env_dir(self, digest: str) -> Path:
        return self.root / digest[:16]

    def is_ready(self, digest: str) -> bool:
        return (self.env_dir(digest) / READY).is_file()

    async def prepare(self, py: m.PythonEnvironment, log: Callable[[str], None]) -> PreparedEnv:
        if py.user_managed:
            return PreparedEnv(python=user_interpreter(py.interpreter), hash=None, cached=True)
        conda_bin: str | None = None
        conda_from = ""
        if py.conda:
            conda_bin = shutil.which("micromamba") or shutil.which("conda")
            if conda_bin is None:
                conda_from = "pypi"
                log(no_conda_note(normalise(py).conda))
        digest = env_hash(py, conda_from=conda_from)
        python = str(self.env_dir(digest) / "bin" / "python")
        if self.is_ready(digest):
            self.hits += 1
            log(f"using cached environment {digest[:16]}")
            return PreparedEnv(python=python, hash=digest, cached=True)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        # waiting on another's build: stop waiting once it is ready (the builder's run then
        # holds a shared lock on it, which would keep the exclusive one from us while it runs)
        ready = functools.partial(self.is_ready, digest)
        async with lock, file_lock(self._lock_path(digest), stop_when=ready):
            if self.is_ready(digest):
                self.hits += 1
                log(f"using cached environment {digest[:16]}")
                return PreparedEnv(python=python, hash=digest, cached=True)
            self.misses += 1
            log(f"building environment {digest[:16]}")
            await self._build(normalise(py), self.env_dir(digest), log, conda_bin)
        log(f"environment {digest[:16]} ready")
        return PreparedEnv(python=python, hash=digest, cached=False)

    async def prepare_held(
        self, py: m.PythonEnvironment, log: Callable[[str], None]
    ) -> tuple[PreparedEnv, EnvHold | None]:
        """:meth:`prepare`, then a shared lock on the environment (to close when the run has
        ended; None for a user-managed one). An environment evicted between the two is
        prepared again."""
        for _ in range(HOLD_TRIES):
            env = await self.prepare(py, log)
            if env.hash is None:
                return env, None
            fd = self._hold(env.hash)
            if fd is not None:
                return env, EnvHold(fd)
        raise EnvError(
            "the environment was removed by garbage collection again and again while this run "
            "prepared it: run `sortie gc` less often, or give the environment cache more room"
        )

    def _hold(self, digest: str) -> int | None:
        fd = os.open(self._lock_path(digest), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # being built or evicted right now
            os.close(fd)
            return None
        if not self.is_ready(digest):
            os.close(fd)
            return None
        with contextlib.suppress(OSError):
            os.utime(self.env_dir(digest) / READY)  # last used: the LRU order of eviction
        return fd

    def _lock_path(self, digest: str) -> Path:
        return self.root / f"{digest[:16]}.lock"

    async def _build(
        self,
        py: m.PythonEnvironment,
        dest: Path,
        log: Callable[[str], None],
        conda_bin: str | None,
    ) -> None:
        uv_bin = self._uv or find_uv()
        # whatever is there is left over from an interrupted build
        await asyncio.to_thread(shutil.rmtree, dest, True)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        ok = False
        try:
            for argv in build_steps(py, dest, uv_bin=uv_bin, conda_bin=conda_bin):
                code = await _stream(argv, log, tail)
                if code != 0:
                    if py.conda and conda_bin is None:
                        missing = not_on_pypi(py.conda, "\n".join(tail))
                        if missing:
                            raise EnvError(not_on_pypi_message(missing))
                    tool = Path(argv[0]).name
                    raise EnvError(
                        f"environment build failed (`{tool} {argv[1]}` exited with code {code}); "
                        "last lines of the build output:\n" + "\n".join(tail)
                    )
            (dest / READY).write_text("ok\n")
            ok = True
        finally:
            if not ok:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, dest, True))


def build_steps(
    py: m.PythonEnvironment, dest: Path, *, uv_bin: str, conda_bin: str | None
) -> list[list[str]]:
    """The commands that build a normalised environment into ``dest`` (pure).

    Without conda packages: ``uv venv`` then ``uv pip install``. With them: ``micromamba``/
    ``conda create --prefix`` with the channels, Python and conda packages, then the pip list
    installed into that prefix with uv; without conda (``conda_bin`` None), the conda packages
    are pip requirements of the same names, installed with uv before the pip list.
    """
    python = str(dest / "bin" / "python")
    pip = list(py.pip)
    if py.conda and conda_bin is None:
        try:
            pip = [pip_requirement(c) for c in py.conda] + pip
        except CondaSpecError as exc:
            raise EnvError(f"{exc}: write it as name, name=version or name>=version") from None
    if py.conda and conda_bin is not None:
        version = py.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        python_spec = f"python={version}" if version[:1].isdigit() else f"python{version}"
        channels = [arg for ch in py.channels for arg in ("-c", ch)]
        steps = [
            [conda_bin, "create", "--yes", "--prefix", str(dest), *channels, python_spec, *py.conda]
        ]
    else:
        steps = [[uv_bin, "venv", str(dest), "--python", py.python_version or sys.executable]]
    if pip:
        steps.append([uv_bin, "pip", "install", "--python", python, *pip])
    return steps


async def stream_command(
    argv: list[str],
    log: Callable[[str], None],
    tail: collections.deque[str],
    *,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``argv``, handing each output line (stdout and stderr) to ``log`` as it comes and
    keeping the last ones in ``tail``; return the exit code. Raises OSError if it can't start."""
    if env is None:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env["NO_COLOR"] = "1"
        env.setdefault("UV_NATIVE_TLS", "1")  # the host's certificates (and so a proxy's CA)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        limit=1 << 20,
    )
    assert proc.stdout is not None
    try:
        while raw := await proc.stdout.readline():
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(text)
            log(text)
        return await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())


async def _stream(argv: list[str], log: Callable[[str], None], tail: collections.deque[str]) -> int:
    try:
        return await stream_command(argv, log, tail)
    except OSError as exc:
        raise EnvError(f"cannot run {argv[0]}: {exc}") from None


def user_interpreter(interpreter: str | None) -> str:
    """The interpreter of a user-managed environment; raise EnvError if it is unusable."""
    if not interpreter:
        return sys.executable
    path = interpreter if "/" in interpreter else (shutil.which(interpreter) or interpreter)
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise EnvError(
            f"the user-managed interpreter {interpreter!r} does not exist or is not executable "
            "on this agent host: install it there, set environment.python.interpreter to an "
            "existing interpreter, or use a system-managed environment (user_managed=False)"
        )
    return path


def lock_held(path: Path) -> bool:
    """Does anyone hold a lock on ``path`` (a run's shared one, a builder's exclusive one)?"""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.asynccontextmanager
async def file_lock(
    path: Path, poll_s: float = 0.1, stop_when: Callable[[], bool] | None = None
) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) without blocking the loop:
    builds of one content hash in several processes take turns. ``stop_when``: stop waiting
    (and hold nothing) once it is true; the caller checks it again inside."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop_when is not None and stop_when():
                    break
                await asyncio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # releases the lock
