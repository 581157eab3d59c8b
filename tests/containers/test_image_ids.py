"""Which image a tag names, asked of a real agent on a real engine (Podman) the way the
scheduler asks it for a pipeline's container step: the ID follows the tag when it is
re-pointed to another image, an image the engine lacks is absent, and the daemon-side
``look_up`` keys each step on its agent's answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from sortie.bus.connection import Bus
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.scheduler import image_lookup
from sortie.scheduler.model import AgentView
from tests.agents.agent_builders import agent
from tests.containers.conftest import Engine
from tests.containers.test_env_images import derive_image, remove_image

AGENT_ID = "local-test"  # what tests.agents.agent_builders.agent names its agent
ASK_S = 15.0


@pytest.fixture
async def other_image(docker: aiodocker.Docker, busybox_image: str) -> AsyncIterator[str]:
    """An image other than busybox (busybox with one more label)."""
    tag = f"localhost/sortie-imageid-other-{uuid.uuid4().hex[:8]}:1"
    await derive_image(docker, busybox_image, tag, "true", ["LABEL sortie.test=other"])
    try:
        yield tag
    finally:
        await remove_image(docker, tag)


@pytest.fixture
async def moving_tag(docker: aiodocker.Docker) -> AsyncIterator[str]:
    """A tag of the test's own, removed afterwards (the images it named stay)."""
    tag = f"localhost/sortie-imageid-{uuid.uuid4().hex[:8]}:latest"
    try:
        yield tag
    finally:
        await remove_image(docker, tag)


async def point(docker: aiodocker.Docker, tag: str, image: str) -> str:
    """Point ``tag`` at ``image``; the image's ID."""
    repo, _, version = tag.rpartition(":")
    await docker.images.tag(image, repo, tag=version)
    return str((await docker.images.inspect(image))["Id"])


def step(name: str, image: str, target: str = "local") -> p.StepSpec:
    env = m.Environment(docker=m.DockerSection(enabled=True, base_image=image))
    return p.StepSpec(
        name=name,
        run=m.RunSpec(
            experiment="e", script="t.py", snapshot_id="s", target=target, environment=env
        ),
    )


async def test_the_id_follows_a_tag_re_pointed_to_another_image(  # noqa: PLR0917  # pytest passes fixtures by name
    bus: Bus,
    tmp_path: Path,
    podman: Engine,
    docker: aiodocker.Docker,
    busybox_image: str,
    other_image: str,
    moving_tag: str,
) -> None:
    async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
        await sched.incarnation()
        first = await point(docker, moving_tag, busybox_image)
        got = await image_lookup.ask(bus.nc, AGENT_ID, moving_tag, ASK_S)
        assert got == m.ImageFound(reference=moving_tag, image_id=first)

        second = await point(docker, moving_tag, other_image)
        assert second != first
        got = await image_lookup.ask(bus.nc, AGENT_ID, moving_tag, ASK_S)
        assert got == m.ImageFound(reference=moving_tag, image_id=second)

        missing = f"localhost/sortie-imageid-missing-{uuid.uuid4().hex[:8]}:1"
        got = await image_lookup.ask(bus.nc, AGENT_ID, missing, ASK_S)
        assert got == m.ImageAbsent(reference=missing)

        # the daemon's look-up: each tagged step keyed on its agent's answer; a pinned one
        # is not asked about; a target without an agent says so
        live = AgentView(
            agent_id=AGENT_ID,
            incarnation="i",
            target="local",
            hostname="h",
            capacity=m.Capacity(cpus=1, memory_mb=1),
            first_seen=0.0,
            last_seen=time.time(),
            container_engine="podman",
        )
        elsewhere = step("far", moving_tag, target="gpu")
        spec = p.PipelineSpec(
            name="pipe",
            steps=[
                step("a", moving_tag),
                step("b", missing),
                step("c", "localhost/x@sha256:" + "0" * 64),
                elsewhere,
            ],
        )
        found = await image_lookup.look_up(bus.nc, [live], spec, ASK_S)
        assert found == {
            "a": p.ImageLookup(image_id=second),
            "b": p.ImageLookup(problem=f"agent {AGENT_ID} has no such image"),
            "far": p.ImageLookup(
                problem="no live agent of target 'gpu' that runs containers to ask"
            ),
        }


async def test_an_agent_that_is_not_there_is_said_so(bus: Bus) -> None:
    got = await image_lookup.ask(bus.nc, "nobody-here", "img:1", ASK_S)
    assert got == "agent nobody-here is not connected"
