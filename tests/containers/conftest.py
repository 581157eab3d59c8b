"""A real container engine for the tests: Podman's Docker-compatible API service.

DESIGN.md: a containers.conf with default_ulimits and runtime = "runc" (without them container
start fails on these machines), pointed at by CONTAINERS_CONF rather than editing /etc; the
service on a unix socket given to clients as DOCKER_HOST. No registry is reachable, so test
images are built locally (`podman import` of a rootfs tarball).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""
BUSYBOX_IMAGE = "localhost/sortie-test-busybox:latest"
SETUP_HINT = "run `sudo tests/setup-system.sh` (it installs podman, runc and busybox-static)"


@dataclass(frozen=True)
class Engine:
    docker_host: str  # unix:///.../podman.sock, as DOCKER_HOST
    socket: Path
    env: dict[str, str]  # CONTAINERS_CONF for podman CLI calls the tests make

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"podman system service exited with {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.1)
    raise RuntimeError(f"podman's API socket {path} did not appear within {timeout}s")


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        pytest.fail(f"podman/runc are not installed: {SETUP_HINT}")
    root = tmp_path_factory.mktemp("podman")
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    sock = root / "podman.sock"
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    log = open(root / "service.log", "wb")  # noqa: SIM115 - the service's output
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_socket(sock, proc)
        yield Engine(docker_host=f"unix://{sock}", socket=sock, env=env)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def import_rootfs(engine: Engine, rootfs: Path, tag: str) -> str:
    tarball = rootfs.parent / f"{rootfs.name}.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    engine.podman("import", str(tarball), tag)
    return tag


@pytest.fixture
async def docker(podman: Engine) -> AsyncIterator[aiodocker.Docker]:
    """A Docker API client of the tests' engine (closed after the test)."""
    client = aiodocker.Docker(url=podman.docker_host)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def busybox_image(podman: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shell-only image: Debian's static busybox and its applets."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail(f"busybox is not installed: {SETUP_HINT}")
    rootfs = tmp_path_factory.mktemp("busybox") / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("tmp", "etc", "proc", "sys", "dev"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    return import_rootfs(podman, rootfs, BUSYBOX_IMAGE)
