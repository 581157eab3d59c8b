"""Wheels of Sortie and every dependency, built on the scheduler side for offline installs.

An attached host needs no internet and no package index: the scheduler builds the wheels
(`pip wheel`, which may use the index from here), copies them over SSH, and the host installs
from them alone. The wheelhouse is keyed by a hash of pyproject.toml, the package sources and
this Python's tag, so it is rebuilt only when one of those changes.

The project is built from a clean copy of its packages in a temporary directory: nothing is
written into the source tree, and no stale `build/` output can leak into the wheel.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from sortie.scheduler.ssh import SshError

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("sortie",)  # the one import package (pyproject: packages.find)
TOP_FILES = ("pyproject.toml", "README.md")
OUTPUT_TAIL = 4000

_locks: dict[tuple[int, Path], asyncio.Lock] = {}


def python_tag() -> str:
    """What binary wheels depend on: interpreter, version, ABI and platform."""
    return f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"


def _source_files(root: Path) -> list[Path]:
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for pkg in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(root / pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files.extend(
                Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))
            )
    return files


def source_hash(root: Path = ROOT) -> str:
    """sha256 over the project's build inputs and the Python tag (16 hex digits)."""
    h = hashlib.sha256(python_tag().encode())
    for path in _source_files(root):
        h.update(b"\0" + path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _copy_sources(root: Path, dest: Path) -> None:
    for path in _source_files(root):
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _lock_for(cache_dir: Path) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), cache_dir)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


async def build_wheelhouse(cache_dir: Path) -> Path:
    """The directory of wheels for this source tree, built once (cached under `cache_dir`)."""
    cache_dir = await asyncio.to_thread(lambda: cache_dir.expanduser().resolve())
    async with _lock_for(cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = await asyncio.to_thread(source_hash, ROOT)
        final = cache_dir / f"wheels-{key}"
        if (final / ".complete").exists():
            return final
        # Another process may be building the same wheelhouse: take a file lock too.
        lock_fd = os.open(cache_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
            if (final / ".complete").exists():
                return final
            await _build(final)
            _prune(cache_dir, keep=final)
            return final
        finally:
            os.close(lock_fd)


async def _build(final: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="sortie-wheelhouse-", dir=final.parent))
    try:
        src = work / "src"
        wheels = work / "wheels"
        await asyncio.to_thread(_copy_sources, ROOT, src)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--disable-pip-version-check",
            "--no-input",
            "--wheel-dir",
            str(wheels),
            str(src),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
        out, _ = await proc.communicate()
        tail = out.decode(errors="replace")[-OUTPUT_TAIL:]
        if proc.returncode != 0:
            raise SshError(
                "install_failed",
                f"building the wheels of Sortie and its dependencies failed (pip wheel exit "
                f"{proc.returncode}); the scheduler's host needs access to a package index",
                output=tail,
            )
        if not any(wheels.glob("uv-*.whl")) or not any(wheels.glob("sortie-*.whl")):
            raise SshError(
                "install_failed",
                "the wheelhouse lacks the sortie or uv wheel after pip wheel",
                output=tail,
            )
        (wheels / "python-tag.txt").write_text(python_tag() + "\n")
        (wheels / ".complete").write_text("")
        await asyncio.to_thread(_replace_dir, wheels, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replace_dir(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    src.rename(dest)


def _prune(cache_dir: Path, keep: Path) -> None:
    """Drop older wheelhouses (they belong to sources that changed since)."""
    for old in cache_dir.glob("wheels-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
