"""Container runs end to end: `sortie up` (or a broker, scheduler and agent as processes) whose
agent has a real engine (Podman's API)."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.broker import free_port
from tests.containers.conftest import Engine
from tests.e2e.conftest import Installation, start_up, stop_up, wait_until
from tests.faults import Cluster


@pytest.fixture(scope="module")
def boxed(podman: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """`sortie up` whose local agent finds the test engine through DOCKER_HOST."""
    root = tmp_path_factory.mktemp("boxed")
    env = dict(
        os.environ,
        SORTIE_PROFILE=str(root / "profile.json"),
        DOCKER_HOST=podman.docker_host,
        CONTAINERS_CONF=podman.env["CONTAINERS_CONF"],
    )
    env.pop("SORTIE_URL", None)
    port = free_port()
    proc = start_up(root / "data", port, env, root / "up.log")
    inst = Installation(
        url=f"nats://127.0.0.1:{port}",
        data_dir=root / "data",
        env=env,
        process=proc,
        log=root / "up.log",
    )
    try:
        wait_until(
            lambda: any(a.get("container_engine") for a in inst.json("agent", "list")),
            timeout=60,
        )
        yield inst
    finally:
        stop_up(proc)


def containers(podman: Engine) -> list[str]:
    out = podman.podman("ps", "-a", "--filter", "label=sortie.run_id", "--format", "{{.ID}}")
    return out.stdout.split()


def test_shell_script_in_a_shell_only_image(
    boxed: Installation, podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    (tmp_path / "job.sh").write_text(
        textwrap.dedent("""
        echo "inside: $(cat /etc/hostname 2>/dev/null || echo box)"
        echo '{"name": "loss", "value": 0.25, "t": 0, "step": 1}' >> "$SORTIE_METRICS_FILE"
        if touch /sortie/work/should-fail 2>/dev/null; then echo "snapshot is writable"; fi
        echo "model" > outputs/model.txt
        echo done
    """)
    )
    proc = boxed.cli(
        "run",
        "submit",
        str(tmp_path),
        "--script",
        "job.sh",
        "--docker-image",
        busybox_image,
        "--wait",
        "--output",
        "json",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    shown = boxed.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Completed"
    assert shown["metrics"]["loss"] == [0.25]
    assert shown["artifacts"] == ["outputs/model.txt"]
    assert shown["docker"]["base_image"] == busybox_image
    logs = boxed.cli("run", "logs", run_id, check=True).stdout
    assert "done" in logs and "snapshot is writable" not in logs
    assert containers(podman) == [], "no container is left behind"


def test_python_script_in_an_environment_image(
    boxed: Installation, podman: Engine, tmp_path: Path
) -> None:
    from tests.containers.images import build_python_image

    image = build_python_image(podman)
    (tmp_path / "train.py").write_text(
        textwrap.dedent("""
        import six
        from sortie import Run
        print("six", six.__version__, flush=True)
        Run.get_context().log("accuracy", 0.91)
    """)
    )
    args = (
        "run",
        "submit",
        str(tmp_path),
        "--script",
        "train.py",
        "--docker-image",
        image,
        "--pip",
        "six==1.16.0",
        "--wait",
        "--output",
        "json",
    )
    first = boxed.cli(*args, timeout=600)
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout.splitlines()[0])["run_id"]
    shown = boxed.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["metrics"]["accuracy"] == [0.91]
    logs = boxed.cli("run", "logs", run_id, check=True).stdout
    assert "six 1.16.0" in logs
    second = boxed.cli(*args, timeout=300)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout.splitlines()[0])["run_id"]
    again_logs = boxed.cli("run", "logs", again, check=True).stdout
    assert "using cached environment image" in again_logs
    assert containers(podman) == []
    # the agent recorded the image's use; `sortie gc --dry-run` would collect it (no run uses
    # it now) and removes nothing
    tag = next(
        line.split()[-1] for line in again_logs.splitlines() if "using cached environment" in line
    )
    assert (boxed.data_dir / "agent" / "images" / f"{tag.rpartition(':')[2]}.lock").is_file()
    gc = ("gc", "--data-dir", str(boxed.data_dir), "--image-cache-gb", "0", "--dry-run")
    dry = boxed.cli(*gc, check=True).stdout
    assert f"  {tag}  (least recently used)" in dry and "nothing was deleted" in dry
    podman.podman("image", "exists", tag)  # raises if it was removed


def test_missing_image_fails_early_naming_it(boxed: Installation, tmp_path: Path) -> None:
    (tmp_path / "t.sh").write_text("echo never\n")
    proc = boxed.cli(
        "run",
        "submit",
        str(tmp_path),
        "--script",
        "t.sh",
        "--docker-image",
        "localhost/no-such-image:1",
        "--wait",
        "--output",
        "json",
        timeout=120,
    )
    assert proc.returncode == 1
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    shown = boxed.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Failed"
    assert shown["error"]["kind"] == "environment"
    assert "localhost/no-such-image:1" in shown["error"]["message"]


def test_cancel_stops_the_container(
    boxed: Installation, podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    (tmp_path / "long.sh").write_text("echo started\nsleep 300\n")
    sub = boxed.json(
        "run", "submit", str(tmp_path), "--script", "long.sh", "--docker-image", busybox_image
    )
    assert isinstance(sub, dict)
    wait_until(lambda: "started" in boxed.cli("run", "logs", sub["run_id"]).stdout, timeout=60)
    boxed.cli("run", "cancel", sub["run_id"], check=True)
    done = boxed.cli("run", "wait", sub["run_id"], timeout=60)
    assert "Canceled" in done.stderr
    wait_until(lambda: containers(podman) == [], timeout=30)


RETAG_PIPELINE = """\
name: retag
experiment: retag
defaults:
  target: local
steps:
  - name: hello
    script: hello.sh
    source_directory: hello
    environment:
      python: {{user_managed_dependencies: true}}
      docker: {{enabled: true, base_image: "{image}"}}
"""


def test_a_pipeline_step_runs_again_when_its_tag_names_another_image(
    boxed: Installation, podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    """A container step is reused while its tag names the same image; once the tag is
    re-pointed to another image, it runs again and `pipeline show` names the image."""
    tag = f"localhost/sortie-e2e-retag-{uuid.uuid4().hex[:8]}:latest"
    other = f"localhost/sortie-e2e-other-{uuid.uuid4().hex[:8]}:1"
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "hello.sh").write_text("echo hello from the step\n")
    pfile = tmp_path / "pipeline.yml"
    pfile.write_text(RETAG_PIPELINE.format(image=tag))
    (tmp_path / "Containerfile").write_text(f"FROM {busybox_image}\nLABEL sortie.test={other}\n")
    podman.podman("tag", busybox_image, tag)
    try:

        def submitted() -> dict[str, object]:
            proc = boxed.cli(
                "pipeline", "submit", "-f", str(pfile), "--wait", "--output", "json", timeout=180
            )
            assert proc.returncode == 0, (proc.stdout, proc.stderr)
            run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
            show = boxed.json("pipeline", "show", run_id)
            assert isinstance(show, dict) and show["state"] == "Completed", show
            (step,) = show["steps"]
            assert isinstance(step, dict)
            return step

        first = submitted()
        assert first["state"] == "completed", first
        again = submitted()
        assert again["state"] == "reused", again
        assert again["reused_from"] == first["run_id"]

        podman.podman("build", "--pull=never", "-t", other, "-f", str(tmp_path / "Containerfile"),
                      str(tmp_path / "hello"))  # fmt: skip
        podman.podman("tag", other, tag)  # the same name, another image
        moved = submitted()
        assert moved["state"] == "completed", moved
        assert moved["run_id"] not in (first["run_id"], None)
        assert moved["changed"] == ["image"]
        assert moved["ran_because"] == "key changed: image"
    finally:
        for name in (tag, other):
            podman.podman("rmi", "--force", name, check=False)


def test_a_step_whose_image_no_agent_could_resolve_runs_and_is_reused_once_one_answers(
    podman: Engine, busybox_image: str, tmp_path: Path
) -> None:
    """Submitted while its target's only agent is lost, a container step is not reused, and
    `pipeline show` says why; it runs once the agent is back, which reports the image it
    ran, so the next submit (its agent answering) reuses it."""
    c = Cluster(tmp_path / "c")
    c.env.update(DOCKER_HOST=podman.docker_host, CONTAINERS_CONF=podman.env["CONTAINERS_CONF"])
    tag = f"localhost/sortie-e2e-unresolved-{uuid.uuid4().hex[:8]}:latest"
    podman.podman("tag", busybox_image, tag)
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "hello.sh").write_text("echo hello from the step\n")
    pfile = tmp_path / "pipeline.yml"
    pfile.write_text(RETAG_PIPELINE.format(image=tag))

    def agent_state() -> dict[str, object]:
        proc = c.cli("agent", "list", "--output", "json")
        rows = json.loads(proc.stdout) if proc.returncode == 0 else []
        return next((r for r in rows if r.get("agent_id") == "a1"), {})

    def show(run_id: str) -> dict[str, object]:
        proc = c.cli("pipeline", "show", run_id, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
        assert isinstance(found, dict)
        return found

    def submit(*wait: str) -> str:
        proc = c.cli("pipeline", "submit", "-f", str(pfile), *wait, "--output", "json", timeout=180)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return str(json.loads(proc.stdout.splitlines()[0])["run_id"])

    try:
        c.start_broker()
        c.start_scheduler("--lease", "3", "--kill-grace", "1")
        c.start_agent("a1", "--target", "local", "--lease", "3")
        wait_until(lambda: bool(agent_state().get("container_engine")), timeout=60)
        c.kill_agent("a1")
        wait_until(lambda: agent_state().get("state") == "lost", timeout=60)

        first = submit()
        (step,) = show(first)["steps"]
        assert isinstance(step, dict)
        assert step["ran_because"] == (
            f"the image ID of {tag!r} could not be resolved: no live agent of target 'local' "
            "that runs containers to ask"
        )
        c.start_agent("a1")
        wait_until(lambda: show(first)["state"] == "Completed", timeout=120)

        again = submit("--wait")
        (reused,) = show(again)["steps"]
        assert isinstance(reused, dict)
        assert reused["state"] == "reused", reused
        assert reused["reused_from"] == step["run_id"]
    finally:
        c.close()
        podman.podman("rmi", "--force", tag, check=False)
