"""A Python-capable test image, built locally (no registry is reachable).

The rootfs is assembled on the host from Debian's own interpreter: ``/usr/bin/python3.11``, its
standard library (``/usr/lib/python3.11`` without tests, caches and the static libpython), the
shared libraries that ``ldd`` lists for the interpreter, its extension modules and the ``uv``
binary (so uv runs inside the image), the dynamic loader, Debian's static busybox for ``sh`` and
the coreutils, and a minimal ``/etc``. It is then imported with ``podman import``. No network
is needed inside a container at any point.

Debian ships ``ensurepip`` without its bundled wheels (they live in ``python3-pip-whl``), so
``python3 -m venv`` with pip does not work in this image; environments are built with uv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sortie.agents.envcache import find_uv
from tests.containers.conftest import SETUP_HINT, Engine, import_rootfs

PYTHON_IMAGE = "localhost/sortie-test-python:3.11"
PYTHON_NO_UV_IMAGE = "localhost/sortie-test-python-no-uv:3.11"
HOST_PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
# large or test-only parts of the standard library the tests never need
SKIP_DIRS = {"__pycache__", "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo"}
SKIP_SUFFIXES = (".a", ".pyc")
ETC_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
ETC_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_LDD_PATH = re.compile(r"(/\S+)")


def image_exists(engine: Engine, tag: str) -> bool:
    return engine.podman("image", "exists", tag, check=False).returncode == 0


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the loader) that ``ldd`` lists for these binaries."""
    libs: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "not a dynamic executable" in line or "statically linked" in line:
                continue
            for match in _LDD_PATH.findall(line.split("=>")[-1]):
                path = Path(match)
                if path.exists():
                    libs.add(path)
    return libs


def _in_rootfs(rootfs: Path, path: Path) -> Path:
    """Where a host path goes in a merged-/usr rootfs (``/lib`` -> ``/usr/lib``)."""
    parts = path.parts[1:]
    if parts and parts[0] in ("lib", "lib64", "bin", "sbin"):
        parts = ("usr", *parts)
    return rootfs.joinpath(*parts)


def _copy_stdlib(dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP_DIRS or n.endswith(SKIP_SUFFIXES)}

    shutil.copytree(STDLIB, dest, symlinks=True, ignore=ignore)


def assemble_python_rootfs(rootfs: Path) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None or not HOST_PYTHON.exists():
        raise RuntimeError(f"busybox-static and Debian's python3.11 are needed: {SETUP_HINT}")
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "tmp", "proc", "sys", "dev", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "lib", "lib64"):
        target = "usr/bin" if d == "sbin" else f"usr/{d}"
        (rootfs / d).symlink_to(target)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text(ETC_PASSWD)
    (rootfs / "etc" / "group").write_text(ETC_GROUP)

    usr_bin = rootfs / "usr" / "bin"
    shutil.copy(busybox, usr_bin / "busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (usr_bin / applet).symlink_to("busybox")

    shutil.copy(HOST_PYTHON, usr_bin / "python3.11")
    (usr_bin / "python3").symlink_to("python3.11")
    _copy_stdlib(rootfs / "usr" / "lib" / "python3.11")

    dynload = sorted((STDLIB / "lib-dynload").glob("*.so"))
    for lib in _shared_libraries([HOST_PYTHON, Path(find_uv()), *dynload]):
        dest = _in_rootfs(rootfs, lib)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy(lib, dest)  # follows links: the versioned file lands under the soname
    return rootfs


def build_python_image(
    engine: Engine, work_dir: Path | None = None, *, uv_runs: bool = True
) -> str:
    """``localhost/sortie-test-python:3.11``, built once (kept in the engine's storage).

    ``work_dir`` holds the rootfs and its tarball; a temporary directory when not given.
    ``uv_runs=False``: ``localhost/sortie-test-python-no-uv:3.11``, the same without
    ``libgcc_s.so.1`` (which only uv needs), so the host's uv binary cannot run in it.
    """
    tag = PYTHON_IMAGE if uv_runs else PYTHON_NO_UV_IMAGE
    if image_exists(engine, tag):
        return tag
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        rootfs = assemble_python_rootfs(Path(tmp) / "python-rootfs")
        if not uv_runs:
            for lib in rootfs.glob("usr/lib*/**/libgcc_s.so*"):
                lib.unlink()
        import_rootfs(engine, rootfs, tag)
    check = engine.podman(
        "run", "--rm", "--network=none", tag,
        "python3", "-c", "import ssl, json, venv, sqlite3, ctypes; print('ok')",
        check=False,
    )  # fmt: skip
    if check.returncode != 0 or check.stdout.strip() != "ok":
        engine.podman("rmi", "--force", tag, check=False)
        raise RuntimeError(
            f"the test Python image does not work ({check.returncode}): {check.stdout}"
            f"{check.stderr}"
        )
    return tag
