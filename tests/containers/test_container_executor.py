"""The container executor against a real engine (Podman's Docker-compatible API)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiodocker
import pytest

from sortie.agents.engine import EngineError, engine_name, probe_engine
from sortie.agents.executors import Launch, OutputStream
from sortie.agents.executors.container_run import (
    LABEL_AGENT,
    LABEL_ATTEMPT,
    LABEL_RUN_ID,
    ContainerExecution,
    ContainerSpec,
    Mount,
    exit_code_of,
    parse_arguments,
    parse_size,
    start_container,
)
from tests.containers.conftest import Engine

RUN_LABEL = "exec-test"


class Lines:
    def __init__(self) -> None:
        self.got: list[tuple[OutputStream, str, float]] = []

    def __call__(self, stream: OutputStream, line: str) -> None:
        self.got.append((stream, line, time.monotonic()))

    def texts(self, stream: OutputStream | None = None) -> list[str]:
        return [t for s, t, _ in self.got if stream is None or s == stream]


def make_launch(
    engine: Engine,
    image: str,
    tmp_path: Path,
    script: str,
    *,
    arguments: list[str] | None = None,
    max_duration_s: float | None = None,
    kill_grace_s: float = 2.0,
    run_id: str = RUN_LABEL,
) -> tuple[Launch, ContainerSpec]:
    work = tmp_path / "work"
    (work / "outputs").mkdir(parents=True, exist_ok=True)
    (work / "script.sh").write_text(script)
    stop_file = tmp_path / "stop-reason"
    stop_file.write_text("")
    launch = Launch(
        argv=["sh", "/sortie/work/script.sh"],
        cwd=work,
        env={"SORTIE_STOP_REASON_FILE": "/sortie/stop-reason", "GREETING": "hi"},
        max_duration_s=max_duration_s,
        kill_grace_s=kill_grace_s,
        stop_reason_file=stop_file,
    )
    spec = ContainerSpec(
        image=image,
        mounts=[
            Mount(work, "/sortie/work", read_only=True),
            Mount(work / "outputs", "/sortie/work/outputs", read_only=False),
            Mount(stop_file, "/sortie/stop-reason", read_only=True),
        ],
        workdir="/sortie/work",
        arguments=arguments or [],
        labels={LABEL_RUN_ID: run_id, LABEL_ATTEMPT: "1", LABEL_AGENT: "exec-agent"},
        docker_host=engine.docker_host,
    )
    return launch, spec


async def labelled(engine: Engine, run_id: str = RUN_LABEL) -> list[dict[str, object]]:
    docker = aiodocker.Docker(url=engine.docker_host)
    try:
        found = await docker.containers.list(
            all=True, filters={"label": [f"{LABEL_RUN_ID}={run_id}"]}
        )
        return [c._container for c in found]
    finally:
        await docker.close()


async def test_runs_a_shell_script_from_a_read_only_snapshot(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    script = """\
echo "first $GREETING"
echo "to stderr" >&2
i=0; while [ ! -e /sortie/work/outputs/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
if touch /sortie/work/new 2>/dev/null; then echo "snapshot writable"; else echo "snapshot ro"; fi
echo weights > /sortie/work/outputs/model.txt
test -z "$HOME_OF_AGENT" && echo "no agent env"
exit 3
"""
    os.environ["HOME_OF_AGENT"] = "leak"  # the executor passes Launch.env only
    try:
        lines = Lines()
        launch = make_launch(podman, busybox_image, tmp_path, script)
        execution = await start_container(*launch, lines)
        assert isinstance(execution, ContainerExecution)
        # labels are on the container while it runs
        running = await labelled(podman)
        assert len(running) == 1
        labels = running[0]["Labels"]
        assert isinstance(labels, dict) and labels[LABEL_ATTEMPT] == "1"
        # Output is live: the first line arrives while the script still waits for us (it
        # prints the rest only once outputs/go exists, or after 30 s).
        for _ in range(300):
            if "first hi" in lines.texts():
                break
            await asyncio.sleep(0.1)
        assert lines.texts("stdout") == ["first hi"], "the first line did not arrive live"
        (tmp_path / "work" / "outputs" / "go").touch()
        outcome = await execution.wait()
    finally:
        del os.environ["HOME_OF_AGENT"]
    assert outcome.exit_code == 3 and not outcome.timed_out and not outcome.stopped
    assert lines.texts("stdout") == ["first hi", "snapshot ro", "no agent env"]
    assert lines.texts("stderr") == ["to stderr"]
    assert (tmp_path / "work" / "outputs" / "model.txt").read_text() == "weights\n"
    assert not (tmp_path / "work" / "new").exists()
    assert await labelled(podman) == []  # removed


async def test_stop_writes_the_reason_then_sigterm(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    script = """\
trap 'echo "stopping: $(cat $SORTIE_STOP_REASON_FILE)"; exit 5' TERM
echo ready
while true; do sleep 0.1; done
"""
    lines = Lines()
    execution = await start_container(*make_launch(podman, busybox_image, tmp_path, script), lines)
    while "ready" not in lines.texts():
        await asyncio.sleep(0.05)
    await execution.stop("preempted")
    outcome = await execution.wait()
    assert outcome.stopped and outcome.exit_code == 5
    assert "stopping: preempted" in lines.texts("stdout")
    assert await labelled(podman) == []


async def test_sigkill_after_the_grace_for_a_script_ignoring_term(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    script = "trap '' TERM\necho ready\nwhile true; do sleep 0.1; done\n"
    lines = Lines()
    execution = await start_container(
        *make_launch(podman, busybox_image, tmp_path, script, kill_grace_s=1.0), lines
    )
    while "ready" not in lines.texts():
        await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await execution.stop("canceled")
    outcome = await execution.wait()
    assert time.monotonic() - t0 >= 0.9
    assert outcome.stopped and outcome.exit_code == -9  # as a process run reports it
    assert (tmp_path / "stop-reason").read_text() == "canceled\n"
    assert await labelled(podman) == []


async def test_max_duration_times_out(podman: Engine, busybox_image: str, tmp_path: Path) -> None:
    script = (
        "trap 'echo \"$(cat /sortie/stop-reason)\"; exit 1' TERM\nwhile true; do sleep 0.1; done\n"
    )
    lines = Lines()
    execution = await start_container(
        *make_launch(podman, busybox_image, tmp_path, script, max_duration_s=1.0), lines
    )
    outcome = await execution.wait()
    assert outcome.timed_out and not outcome.stopped and outcome.exit_code == 1
    assert lines.texts("stdout") == ["timeout"]
    assert await labelled(podman) == []


async def test_supported_arguments_reach_the_container(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    # nproc too: on these hosts an engine without a permitted nproc limit cannot start
    args = ["--env=EXTRA=yes", "--ulimit=nofile=512:1024", "--ulimit=nproc=1024", "--ipc=private"]
    lines = Lines()
    execution = await start_container(
        *make_launch(
            podman, busybox_image, tmp_path, 'echo "$EXTRA $(ulimit -n)"\n', arguments=args
        ),
        lines,
    )
    outcome = await execution.wait()
    assert outcome.exit_code == 0
    assert lines.texts("stdout") == ["yes 512"]


async def test_unsupported_argument_is_refused(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    launch = make_launch(podman, busybox_image, tmp_path, "true\n", arguments=["--privileged"])
    with pytest.raises(EngineError) as err:
        await start_container(*launch, Lines())
    assert err.value.kind == "start"
    assert "'--privileged' is not supported" in err.value.message
    assert "--ipc=host|private" in err.value.message and "--env=KEY=VALUE" in err.value.message
    assert await labelled(podman) == []


async def test_missing_image_says_what_to_do(podman: Engine, tmp_path: Path) -> None:
    launch = make_launch(podman, "localhost/sortie-no-such-image:1", tmp_path, "true\n")
    with pytest.raises(EngineError) as err:
        await start_container(*launch, Lines())
    assert err.value.kind == "environment"
    assert "image localhost/sortie-no-such-image:1 is not on this agent's engine" in str(err.value)
    assert "podman load" in err.value.message


async def test_unreachable_engine_names_the_socket(busybox_image: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-engine.sock"
    launch = make_launch(
        Engine(docker_host=f"unix://{missing}", socket=missing, env={}),
        busybox_image,
        tmp_path,
        "true\n",
    )
    with pytest.raises(EngineError) as err:
        await start_container(*launch, Lines())
    assert err.value.kind == "environment"
    assert f"unix://{missing}" in err.value.message and "DOCKER_HOST" in err.value.message
    assert await probe_engine(f"unix://{missing}") is None


async def test_probe_names_the_engine(podman: Engine) -> None:
    name = await probe_engine(podman.docker_host)
    assert name is not None and name.startswith("podman ")


def test_pure_helpers() -> None:
    assert engine_name({"Version": "24.0.7", "Components": [{"Name": "Engine"}]}) == (
        "docker 24.0.7"
    )
    assert parse_size("2g") == 2 * 1024**3 and parse_size("512m") == 512 * 1024**2
    assert parse_size(None) is None
    with pytest.raises(EngineError):
        parse_size("lots")
    opts = parse_arguments(["--ipc", "host", "--cap-add=sys_ptrace", "--env=A=b=c"])
    assert opts.ipc == "host" and opts.cap_add == ["SYS_PTRACE"] and opts.env == {"A": "b=c"}
    for bad in (["--ipc=shareable"], ["--ulimit=nofile"], ["--env=NOVALUE"], ["--cap-add"]):
        with pytest.raises(EngineError):
            parse_arguments(bad)
    assert exit_code_of(137, {15, 9}) == -9
    assert exit_code_of(143, {15}) == -15
    assert exit_code_of(143, set()) == 143  # the script's own exit code
    assert exit_code_of(137, set(), oom_killed=True) == -9


def test_gpus_become_device_requests_in_the_create_body(tmp_path: Path) -> None:
    """The GPUs given to a run reach the engine as the Docker API's DeviceRequests (nvidia
    driver, these device ids, the gpu capability). Built here as a pure function: there is no
    GPU and no nvidia runtime on these machines to run it against."""
    from sortie.agents.executors.container_run import container_config

    spec = ContainerSpec(
        image="img",
        mounts=[Mount(tmp_path, "/sortie/work", read_only=True)],
        workdir="/sortie/work",
        gpus=[2, 5],
        shm_size="2g",
        arguments=["--ipc=host"],
        labels={"sortie.run_id": "r"},
        docker_host="unix:///x",
    )
    launch = Launch(argv=["python3", "t.py"], cwd=tmp_path, env={"A": "1"})
    body = container_config(launch, spec, parse_arguments(spec.arguments))
    host = body["HostConfig"]
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["2", "5"], "Capabilities": [["gpu"]]}
    ]
    assert host["ShmSize"] == 2 * 1024**3 and host["IpcMode"] == "host"
    assert host["Mounts"][0] == {
        "Type": "bind",
        "Source": str(tmp_path),
        "Target": "/sortie/work",
        "ReadOnly": True,
    }
    assert body["Env"] == ["A=1"] and body["Labels"] == {"sortie.run_id": "r"}
    no_gpu = ContainerSpec(image="img", mounts=[], workdir="/w", docker_host="unix:///x")
    plain = container_config(launch, no_gpu, parse_arguments([]))
    assert "DeviceRequests" not in plain["HostConfig"]
