"""Environment images against a real engine (Podman's Docker-compatible API service)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from sortie.agents import container_images as ci
from sortie.proto import messages as m
from tests.containers.conftest import Engine
from tests.containers.images import build_python_image

REPO_ROOT = Path(__file__).resolve().parents[2]

SIX = m.PythonEnvironment(user_managed=False, pip=["six==1.16.0"])


@pytest.fixture(scope="session")
def python_image(podman: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_python_image(podman, tmp_path_factory.mktemp("python-image"))


@pytest.fixture
async def docker(podman: Engine) -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker(url=podman.docker_host)
    build_filter = json.dumps({"label": [f"{ci.LABEL_BUILD}=1"]})
    try:
        # the engine is shared by everything on this machine: judge only what this test made
        before = {c.id for c in await client.containers.list(all=True, filters=build_filter)}
        yield client
        # whatever happened, no probe or build container of this test is left behind
        after = {c.id for c in await client.containers.list(all=True, filters=build_filter)}
        assert after - before == set()
    finally:
        await client.close()


async def derive_image(
    docker: aiodocker.Docker, base: str, tag: str, script: str, changes: list[str]
) -> str:
    """An image made from ``base`` by running ``script`` in it and committing with ``changes``
    (made once: kept in the engine's storage like the base)."""
    if await ci.image_present(docker, tag):
        return tag
    container = await docker.containers.create({"Image": base, "Cmd": ["sh", "-c", script]})
    try:
        await container.start()
        assert (await container.wait())["StatusCode"] == 0
        repo, _, version = tag.rpartition(":")
        await docker._query_json(
            "commit",
            method="POST",
            params={"container": container.id, "repo": repo, "tag": version,
                    "changes": "\n".join(changes)},
            data="{}",
        )  # fmt: skip
    finally:
        await container.delete(force=True)
    return tag


async def remove_image(docker: aiodocker.Docker, tag: str) -> None:
    if await ci.image_present(docker, tag):
        await docker.images.delete(tag, force=True)


async def run_in(docker: aiodocker.Docker, image: str, cmd: list[str]) -> tuple[int, str]:
    container = await docker.containers.create(
        {"Image": image, "Cmd": cmd, "HostConfig": {"NetworkMode": "none"}}
    )
    try:
        await container.start()
        code = (await container.wait())["StatusCode"]
        return code, "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)


async def test_builds_an_environment_image_then_reuses_it(
    docker: aiodocker.Docker, python_image: str
) -> None:
    base_id = (await docker.images.inspect(python_image))["Id"]
    tag = ci.image_tag(ci.image_hash(base_id, SIX))
    await remove_image(docker, tag)
    lines: list[str] = []

    started = time.monotonic()
    image = await ci.ensure_env_image(docker, python_image, SIX, log=lines.append)
    build_s = time.monotonic() - started

    assert image == ci.EnvImage(tag=tag, python="/opt/sortie/env/bin/python", base_id=base_id)
    assert tag.startswith("localhost/sortie-env:") and len(tag.rsplit(":", 1)[1]) == 16
    assert await ci.image_present(docker, tag)
    assert f"building environment image {tag} on {python_image}" in lines
    # the build container's own output came through: uv creating the venv and installing six
    assert any("Creating virtual environment at: /opt/sortie/env" in line for line in lines)
    assert any("six==1.16.0" in line for line in lines)
    info = await docker.images.inspect(tag)
    labels = info["Config"]["Labels"]
    assert labels[ci.LABEL_PYTHON] == image.python
    assert labels[ci.LABEL_HASH] == ci.image_hash(base_id, SIX)
    assert not info["Config"]["Entrypoint"] and not info["Config"]["Cmd"]

    code, out = await run_in(
        docker, tag, [image.python, "-c", "import six; print(six.__version__)"]
    )
    assert (code, out.strip()) == (0, "1.16.0")

    lines.clear()
    started = time.monotonic()
    again = await ci.ensure_env_image(docker, python_image, SIX, log=lines.append)
    hit_s = time.monotonic() - started
    assert again == image
    assert lines == [f"using cached environment image {tag}"]  # no build this time
    assert hit_s < build_s  # a cached image is found, not built again


async def test_concurrent_callers_build_once(docker: aiodocker.Docker, python_image: str) -> None:
    py = m.PythonEnvironment(user_managed=False, pip=["six==1.15.0"])
    base_id = (await docker.images.inspect(python_image))["Id"]
    tag = ci.image_tag(ci.image_hash(base_id, py))
    await remove_image(docker, tag)
    logs: list[list[str]] = [[], [], []]

    images = await asyncio.gather(
        *(ci.ensure_env_image(docker, python_image, py, log=log.append) for log in logs)
    )

    assert {i.tag for i in images} == {tag}
    building = [log for log in logs if any(line.startswith("building ") for line in log)]
    assert len(building) == 1
    code, out = await run_in(
        docker, tag, [images[0].python, "-c", "import six; print(six.__version__)"]
    )
    assert (code, out.strip()) == (0, "1.15.0")


async def test_another_requirement_or_base_gives_another_tag(
    docker: aiodocker.Docker, python_image: str, busybox_image: str
) -> None:
    base_id = (await docker.images.inspect(python_image))["Id"]
    other = m.PythonEnvironment(user_managed=False, pip=["six==1.15.0"])
    same = m.PythonEnvironment(user_managed=False, pip=["  six==1.16.0 ", ""])
    assert ci.image_hash(base_id, SIX) != ci.image_hash(base_id, other)
    assert ci.image_hash(base_id, SIX) == ci.image_hash(base_id, same)
    busybox_id = (await docker.images.inspect(busybox_image))["Id"]
    assert ci.image_hash(base_id, SIX) != ci.image_hash(busybox_id, SIX)


async def test_an_image_without_python_is_refused(
    docker: aiodocker.Docker, busybox_image: str
) -> None:
    lines: list[str] = []
    with pytest.raises(ci.ImageError) as err:
        await ci.ensure_env_image(docker, busybox_image, SIX, log=lines.append)
    assert "has no Python" in err.value.message
    assert busybox_image in err.value.message
    assert err.value.kind == "environment"


async def test_a_missing_base_image_is_named(docker: aiodocker.Docker) -> None:
    with pytest.raises(ci.ImageError) as err:
        await ci.ensure_env_image(
            docker, "localhost/sortie-no-such-image:1", SIX, log=lambda _: None
        )
    assert "localhost/sortie-no-such-image:1 is not present" in err.value.message
    assert "import" in err.value.message


async def test_a_nonexistent_package_fails_with_pips_output(
    docker: aiodocker.Docker, python_image: str
) -> None:
    py = m.PythonEnvironment(user_managed=False, pip=["sortie-no-such-package-xyz==9.9.9"])
    with pytest.raises(ci.ImageError) as err:
        await ci.ensure_env_image(docker, python_image, py, log=lambda _: None)
    assert "downloading wheels on the agent host failed" in err.value.message
    assert "sortie-no-such-package-xyz" in err.value.message  # pip's own words, in the tail
    base_id = (await docker.images.inspect(python_image))["Id"]
    assert not await ci.image_present(docker, ci.image_tag(ci.image_hash(base_id, py)))


async def test_conda_packages_are_not_supported_yet(
    docker: aiodocker.Docker, python_image: str
) -> None:
    py = m.PythonEnvironment(user_managed=False, conda=["numpy"])
    with pytest.raises(ci.ImageError, match="conda packages in container environments"):
        await ci.ensure_env_image(docker, python_image, py, log=lambda _: None)


async def test_an_image_where_uv_cannot_run_builds_with_venv_and_pip(
    docker: aiodocker.Docker, podman: Engine, tmp_path: Path
) -> None:
    base = build_python_image(podman, tmp_path, uv_runs=False)
    base_id = (await docker.images.inspect(base))["Id"]
    tag = ci.image_tag(ci.image_hash(base_id, SIX))
    await remove_image(docker, tag)
    lines: list[str] = []

    image = await ci.ensure_env_image(docker, base, SIX, log=lines.append)

    assert any(line.endswith("installing with pip") for line in lines)
    assert any("Successfully installed six-1.16.0" in line for line in lines)
    code, out = await run_in(
        docker, image.tag, [image.python, "-c", "import six; print(six.__version__)"]
    )
    assert (code, out.strip()) == (0, "1.16.0")


async def test_a_failing_build_reports_its_output_and_leaves_nothing(
    docker: aiodocker.Docker, python_image: str
) -> None:
    # /opt/sortie is a file in this image, so the build cannot create the venv under it
    broken = await derive_image(
        docker, python_image, "localhost/sortie-test-opt-taken:1",
        "mkdir -p /opt && echo taken > /opt/sortie", [],
    )  # fmt: skip
    lines: list[str] = []
    with pytest.raises(ci.ImageError) as err:
        await ci.ensure_env_image(docker, broken, SIX, log=lines.append)
    assert "failed (exit code" in err.value.message
    assert "/opt/sortie" in err.value.message.split("last lines of the build output:")[1]
    base_id = (await docker.images.inspect(broken))["Id"]
    assert not await ci.image_present(docker, ci.image_tag(ci.image_hash(base_id, SIX)))


async def test_the_base_images_user_and_command_are_kept(
    docker: aiodocker.Docker, python_image: str
) -> None:
    base = await derive_image(
        docker, python_image, "localhost/sortie-test-python-nobody:1", "true",
        ["USER nobody", 'CMD ["python3", "-c", "print(42)"]'],
    )  # fmt: skip
    image = await ci.ensure_env_image(docker, base, SIX, log=lambda _: None)
    config = (await docker.images.inspect(image.tag))["Config"]
    assert config["User"] == "nobody"
    assert config["Cmd"] == ["python3", "-c", "print(42)"]
    code, out = await run_in(
        docker, image.tag, [image.python, "-c", "import os, six; print(os.getuid(), six.__name__)"]
    )
    assert (code, out.strip()) == (0, "65534 six")


async def test_a_python_version_the_image_lacks_is_refused(
    docker: aiodocker.Docker, python_image: str
) -> None:
    py = m.PythonEnvironment(user_managed=False, pip=["six"], python_version="3.12")
    with pytest.raises(ci.ImageError, match=r"asks for Python 3\.12 but .* has Python 3\.11"):
        await ci.ensure_env_image(docker, python_image, py, log=lambda _: None)


async def test_a_cancelled_build_leaves_no_container(
    docker: aiodocker.Docker, python_image: str
) -> None:
    py = m.PythonEnvironment(user_managed=False, pip=["six==1.14.0"])
    base_id = (await docker.images.inspect(python_image))["Id"]
    tag = ci.image_tag(ci.image_hash(base_id, py))
    await remove_image(docker, tag)
    in_container = asyncio.Event()

    def log(line: str) -> None:
        if "Creating virtual environment" in line:
            in_container.set()

    task = asyncio.create_task(ci.ensure_env_image(docker, python_image, py, log=log))
    await asyncio.wait_for(in_container.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await ci.image_present(docker, tag)  # the fixture checks for containers


CROSS_PROCESS = """
import asyncio, sys
import aiodocker
from sortie.agents import container_images as ci
from sortie.proto import messages as m

async def main() -> None:
    docker = aiodocker.Docker(url=sys.argv[1])
    try:
        py = m.PythonEnvironment(user_managed=False, pip=["six==1.13.0"])
        await ci.ensure_env_image(docker, sys.argv[2], py, log=print)
    finally:
        await docker.close()

asyncio.run(main())
"""


async def test_two_processes_build_once(
    docker: aiodocker.Docker, podman: Engine, python_image: str
) -> None:
    py = m.PythonEnvironment(user_managed=False, pip=["six==1.13.0"])
    base_id = (await docker.images.inspect(python_image))["Id"]
    tag = ci.image_tag(ci.image_hash(base_id, py))
    await remove_image(docker, tag)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))  # SORTIE_AGENT_DATA: a shared lock dir
    argv = [sys.executable, "-c", CROSS_PROCESS, podman.docker_host, python_image]
    procs = [
        await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        for _ in range(2)
    ]
    outputs = [(await p.communicate())[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    built = [out for out in outputs if f"building environment image {tag}" in out]
    reused = [out for out in outputs if f"using cached environment image {tag}" in out]
    assert (len(built), len(reused)) == (1, 1), outputs


# --- the pure parts, no engine ------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("sortie-probe python=\n", ci.Probe()),
        (
            "noise\nsortie-probe python=/usr/bin/python3\nsortie-probe version=3.11\n"
            "sortie-probe machine=x86_64\nsortie-probe libc=glibc-2.36\n"
            "sortie-probe venv=1\nsortie-probe uv=1\n",
            ci.Probe(python="/usr/bin/python3", version=(3, 11), machine="x86_64",
                     glibc=(2, 36), venv=True, uv_runs=True),
        ),
        (
            "sortie-probe python=/usr/local/bin/python\nsortie-probe version=3.12\n"
            "sortie-probe machine=aarch64\nsortie-probe libc=-\n",
            ci.Probe(python="/usr/local/bin/python", version=(3, 12), machine="aarch64"),
        ),
    ],
)  # fmt: skip
def test_parse_probe(output: str, expected: ci.Probe) -> None:
    assert ci.parse_probe(output) == expected


def test_wheel_platforms() -> None:
    assert ci.wheel_platforms("x86_64", (2, 19)) == [
        "manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_18_x86_64",
        "manylinux_2_19_x86_64", "any",
    ]  # fmt: skip
    assert ci.wheel_platforms("aarch64", None) == [
        "musllinux_1_1_aarch64", "musllinux_1_2_aarch64", "any",
    ]  # fmt: skip


def test_old_python_is_refused() -> None:
    probe = ci.Probe(python="/usr/bin/python", version=(2, 7), uv_runs=True)
    with pytest.raises(ci.ImageError, match=r"has Python 2\.7 at /usr/bin/python, older than 3\.8"):
        ci.check_probe(probe, "img", SIX)


def test_commit_changes_restore_the_base_config() -> None:
    changes = ci.commit_changes({"Cmd": ["python3"], "User": "app"}, "ab" * 32, "sha256:x")
    assert 'CMD ["python3"]' in changes and "ENTRYPOINT []" in changes
    assert "USER app" in changes and f"LABEL {ci.LABEL_BUILD}=" in changes
