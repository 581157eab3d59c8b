"""A pipeline step's data in a container run on a real engine: the output directory is mounted
writable at /sortie/data/out/NAME and stored on completion; a later step's input is mounted
read-only at /sortie/data/in/NAME."""

from __future__ import annotations

from pathlib import Path

from sortie.bus.blobs import get_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.pipelines import data_token
from sortie.proto.states import RunState
from tests.agents.agent_builders import Reports, agent, stream_batches, upload_snapshot
from tests.containers.conftest import Engine

WRITE_SH = b"""\
echo "writing to $1"
echo hello > "$1/greeting.txt"
mkdir "$1/sub" && echo deep > "$1/sub/deep.txt"
ln -s /etc/passwd "$1/leak"
"""
READ_SH = b"""\
echo "reading $1: $(cat "$1/greeting.txt") $(cat "$1/sub/deep.txt")"
if echo no > "$1/greeting.txt" 2>/dev/null
then echo "input writable"
else echo "input read-only"
fi
"""


def step(snap: str, script: str, image: str, **kw: object) -> m.RunSpec:
    env = m.Environment(docker=m.DockerSection(enabled=True, base_image=image))
    return m.RunSpec(experiment="exp", snapshot_id=snap, script=script, environment=env, **kw)


async def _stdout(bus: Bus, run_id: str) -> list[str]:
    raw = await stream_batches(bus.js, subjects.run_logs(run_id))
    batches = [codec.decode(m.LogBatch, d) for d in raw]
    return [ln.text for b in batches for ln in b.lines if ln.stream == "stdout"]


async def test_container_steps_write_and_read_data(
    bus: Bus, tmp_path: Path, podman: Engine, busybox_image: str
) -> None:
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"write.sh": (WRITE_SH, 0o644), "read.sh": (READ_SH, 0o644)})
    async with agent(bus, tmp_path, docker_host=podman.docker_host) as sched:
        inc = await sched.incarnation()
        writer = step(
            snap, "write.sh", busybox_image, arguments=[data_token("d")], data_outputs=["d"]
        )
        await sched.send(m.Assign(run_id="cprep", attempt=1, incarnation=inc, spec=writer))
        got = await reports.until_terminal("cprep")
        assert got[-1].state == RunState.COMPLETED, got[-1].error
        data_id = got[-1].data_outputs["d"]
        manifest = codec.decode(m.Manifest, await get_blob(bus.blobs, data_id))
        assert [(f.path, f.sha256) for f in manifest.files] == [
            ("greeting.txt", sha256_bytes(b"hello\n")),
            ("sub/deep.txt", sha256_bytes(b"deep\n")),
        ]
        assert await _stdout(bus, "cprep") == ["writing to /sortie/data/out/d"]

        reader = step(
            snap, "read.sh", busybox_image, arguments=[data_token("d")], data_inputs={"d": data_id}
        )
        await sched.send(m.Assign(run_id="cread", attempt=1, incarnation=inc, spec=reader))
        got = await reports.until_terminal("cread")
        assert got[-1].state == RunState.COMPLETED, got[-1].error
        assert await _stdout(bus, "cread") == [
            "reading /sortie/data/in/d: hello deep",
            "input read-only",
        ]
    await reports.close()
