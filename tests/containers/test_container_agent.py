"""The whole agent running docker.enabled runs on a real engine, with a fake scheduler."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiodocker

from sortie.agents.executors.container_run import LABEL_AGENT, LABEL_ATTEMPT, LABEL_RUN_ID
from sortie.bus.blobs import has_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests.agents.agent_builders import Reports, agent, stream_batches, upload_snapshot
from tests.containers.conftest import Engine

AGENT_ID = "local-test"  # what tests.agents.agent_builders.agent names its agent

TRAIN_SH = b"""\
echo "hello from $SORTIE_RUN_ID attempt $SORTIE_ATTEMPT"
echo "to stderr" >&2
echo "pythonpath $PYTHONPATH"
test -f /sortie/runtime/sortie/__init__.py && echo "runtime there"
echo "x" > outputs/x.txt
echo '{"name": "acc", "value": 0.5, "t": 1700000000.0, "step": 1}' >> "$SORTIE_METRICS_FILE"
exit "${1:-0}"
"""
SLEEP_SH = b"""\
trap 'echo "stopping: $(cat $SORTIE_STOP_REASON_FILE)"; exit 4' TERM
echo sleeping
while true; do sleep 0.1; done
"""


def spec(snapshot_id: str, **kw: object) -> m.RunSpec:
    return m.RunSpec(experiment="exp", snapshot_id=snapshot_id, **kw)


def docker_env(image: str, **kw: object) -> m.Environment:
    return m.Environment(docker=m.DockerSection(enabled=True, base_image=image, **kw))


async def engine_containers(engine: Engine, label: str) -> list[str]:
    docker = aiodocker.Docker(url=engine.docker_host)
    try:
        found = await docker.containers.list(all=True, filters={"label": [label]})
        return [c.id for c in found]
    finally:
        await docker.close()


async def image_id_of(engine: Engine, image: str) -> str:
    docker = aiodocker.Docker(url=engine.docker_host)
    try:
        return str((await docker.images.inspect(image))["Id"])
    finally:
        await docker.close()


async def test_a_container_run_end_to_end(
    bus: Bus, tmp_path: Path, podman: Engine, busybox_image: str
) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.sh": (TRAIN_SH, 0o644)})
    async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
        inc = await sched.incarnation()
        assert (sched.heartbeats[-1].container_engine or "").startswith("podman ")

        run_spec = spec(snap, script="train.sh", environment=docker_env(busybox_image))
        await sched.send(m.Assign(run_id="crun", attempt=1, incarnation=inc, spec=run_spec))
        got = await reports.until_terminal("crun")
        assert [r.state for r in got] == [
            RunState.STARTING,
            RunState.RUNNING,
            RunState.FINALIZING,
            RunState.COMPLETED,
        ]
        final = got[-1]
        assert final.exit_code == 0 and final.error is None
        # the image that ran, by ID (a pipeline step's cache entry is keyed on it)
        assert final.image_id == await image_id_of(podman, busybox_image)
        assert all(r.image_id is None for r in got[:-1])
        assert [a.path for a in final.artifacts] == ["outputs/x.txt"]
        assert final.artifacts[0].sha256 == sha256_bytes(b"x\n")
        assert await has_blob(bus.blobs, final.artifacts[0].sha256)

        batches = [
            codec.decode(m.LogBatch, d)
            for d in await stream_batches(bus.js, subjects.run_logs("crun"))
        ]
        lines = [(ln.stream, ln.text) for b in batches for ln in b.lines]
        assert ("stdout", "hello from crun attempt 1") in lines
        assert ("stderr", "to stderr") in lines
        assert ("stdout", "pythonpath /sortie/runtime") in lines
        assert ("stdout", "runtime there") in lines
        assert any(s == "system" and "container exited with code 0" in t for s, t in lines)
        metrics = [
            p
            for d in await stream_batches(bus.js, subjects.run_metrics("crun"))
            for p in codec.decode(m.MetricBatch, d).points
        ]
        assert [(p.name, p.value, p.step) for p in metrics] == [("acc", 0.5, 1)]

        # a failing script: its exit code, as for a process run
        failing = spec(
            snap, script="train.sh", arguments=["3"], environment=docker_env(busybox_image)
        )
        await sched.send(m.Assign(run_id="cfail", attempt=1, incarnation=inc, spec=failing))
        got = await reports.until_terminal("cfail")
        assert got[-1].state == RunState.FAILED and got[-1].exit_code == 3
        assert got[-1].image_id is None  # only a completed run's image keys a cache entry
        assert got[-1].error == m.RunError(kind="exit_code", message="script exited with code 3")
        assert await engine_containers(podman, f"{LABEL_AGENT}={AGENT_ID}") == []
    await reports.close()


async def test_cancel_and_bad_input(
    bus: Bus, tmp_path: Path, podman: Engine, busybox_image: str
) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.sh": (SLEEP_SH, 0o644)})
    async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
        inc = await sched.incarnation()
        run_spec = spec(snap, script="train.sh", environment=docker_env(busybox_image))
        await sched.send(m.Assign(run_id="clong", attempt=1, incarnation=inc, spec=run_spec))
        await reports.until_state("clong", RunState.RUNNING)
        assert len(await engine_containers(podman, f"{LABEL_RUN_ID}=clong")) == 1
        await sched.send(m.Cancel(run_id="clong", attempt=1, reason="canceled"))
        got = await reports.until_terminal("clong")
        assert [r.state for r in got][-2:] == [RunState.FINALIZING, RunState.CANCELED]
        batches = [
            codec.decode(m.LogBatch, d)
            for d in await stream_batches(bus.js, subjects.run_logs("clong"))
        ]
        assert "stopping: canceled" in [ln.text for b in batches for ln in b.lines]
        assert await engine_containers(podman, f"{LABEL_RUN_ID}=clong") == []

        missing = spec(snap, script="train.sh", environment=docker_env("localhost/sortie-absent:1"))
        await sched.send(m.Assign(run_id="cnoimg", attempt=1, incarnation=inc, spec=missing))
        got = await reports.until_terminal("cnoimg")
        assert [r.state for r in got] == [RunState.FAILED]  # before Starting
        err = got[-1].error
        assert err is not None and err.kind == "environment"
        assert "image localhost/sortie-absent:1 is not on this agent's engine" in err.message

        refused = spec(
            snap,
            script="train.sh",
            environment=docker_env(busybox_image, arguments=["--network=host"]),
        )
        await sched.send(m.Assign(run_id="cbadarg", attempt=1, incarnation=inc, spec=refused))
        got = await reports.until_terminal("cbadarg")
        err = got[-1].error
        assert got[-1].state == RunState.FAILED and err is not None and err.kind == "start"
        assert "'--network=host' is not supported" in err.message
    await reports.close()


async def test_an_agent_without_an_engine(bus: Bus, tmp_path: Path, busybox_image: str) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.sh": (TRAIN_SH, 0o644)})
    sock = tmp_path / "none.sock"
    async with agent(bus, tmp_path, docker_host=f"unix://{sock}") as sched:
        inc = await sched.incarnation()
        assert sched.heartbeats[-1].container_engine is None
        run_spec = spec(snap, script="train.sh", environment=docker_env(busybox_image))
        await sched.send(m.Assign(run_id="cnoeng", attempt=1, incarnation=inc, spec=run_spec))
        got = await reports.until_terminal("cnoeng")
        err = got[-1].error
        assert got[-1].state == RunState.FAILED and err is not None
        assert err.kind == "environment" and f"unix://{sock}" in err.message
    await reports.close()


async def test_orphans_are_removed_at_agent_start(
    bus: Bus, tmp_path: Path, podman: Engine, busybox_image: str
) -> None:
    docker = aiodocker.Docker(url=podman.docker_host)
    try:
        orphan = await docker.containers.create(
            {
                "Image": busybox_image,
                "Cmd": ["sleep", "600"],
                "Labels": {LABEL_AGENT: AGENT_ID, LABEL_RUN_ID: "ghost", LABEL_ATTEMPT: "1"},
            }
        )
        await orphan.start()
        other = await docker.containers.create(
            {
                "Image": busybox_image,
                "Cmd": ["true"],
                "Labels": {LABEL_AGENT: "another-agent", LABEL_RUN_ID: "x", LABEL_ATTEMPT: "1"},
            }
        )
    finally:
        await docker.close()
    try:
        async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
            await sched.incarnation()
            deadline = time.monotonic() + 15
            while await engine_containers(podman, f"{LABEL_AGENT}={AGENT_ID}"):
                assert time.monotonic() < deadline, "the orphan was not removed"
                await asyncio.sleep(0.2)
            # another agent's container is not this agent's to remove
            assert await engine_containers(podman, f"{LABEL_AGENT}=another-agent") == [other.id]
    finally:
        podman.podman("rm", "-f", other.id, check=False)


async def test_system_managed_python_runs_in_an_env_image(
    bus: Bus, tmp_path: Path, podman: Engine, busybox_image: str
) -> None:
    """A system-managed environment goes through agents.container_images.ensure_env_image.

    busybox has no Python, so the image cannot be built: the run fails early, kind
    "environment" (needs agents.container_images, written beside this module)."""
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.sh": (TRAIN_SH, 0o644)})
    async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
        inc = await sched.incarnation()
        env = m.Environment(
            python=m.PythonEnvironment(user_managed=False, pip=[]),
            docker=m.DockerSection(enabled=True, base_image=busybox_image),
        )
        run_spec = spec(snap, script="train.sh", environment=env)
        await sched.send(m.Assign(run_id="csys", attempt=1, incarnation=inc, spec=run_spec))
        got = await reports.until_terminal("csys", timeout=90)
        err = got[-1].error
        assert got[-1].state == RunState.FAILED and err is not None
        assert err.kind == "environment", err
    await reports.close()
