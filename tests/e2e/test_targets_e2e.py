"""Target lifecycle against a real `sortie up`: deleted and failed targets refuse runs, queued
runs make a delete refuse unless forced, a run without an agent says why (and times out),
attaching a failed name again retries it, and run-based creation makes and removes a cluster."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie import ComputeTarget, Experiment, RunConfiguration, ScriptRunConfig, Workspace
from sortie.bus.broker import free_port
from sortie.client.sdk import ClusterConfiguration, RemoteCompute
from tests.e2e.conftest import Installation, wait_until


@pytest.fixture
def ws(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    w = Workspace.connect()
    yield w
    w.close()


def computes(inst: Installation) -> list[str]:
    listed = inst.json("compute", "list")
    assert isinstance(listed, list)
    return [c["name"] for c in listed]


def state_of(inst: Installation, run_id: str) -> str:
    shown = inst.json("run", "show", run_id)
    assert isinstance(shown, dict)
    return str(shown["state"])


def submit(inst: Installation, src: Path, script: str, *flags: str) -> str:
    sub = inst.json("run", "submit", str(src), "--script", script, *flags)
    assert isinstance(sub, dict)
    return str(sub["run_id"])


def test_delete_with_queued_runs_is_refused_then_forced_and_the_target_is_gone(
    installation: Installation, tmp_path: Path
) -> None:
    inst = installation
    inst.json("compute", "create", "tgt-pool", "--vm-size", "local_small", "--max-nodes", "1")
    (tmp_path / "long.py").write_text("import time\ntime.sleep(300)\n")
    running = submit(inst, tmp_path, "long.py", "--target", "tgt-pool")
    wait_until(lambda: state_of(inst, running) == "Running", timeout=90)
    queued = submit(inst, tmp_path, "long.py", "--target", "tgt-pool")  # the one node is busy

    refused = inst.cli("compute", "delete", "tgt-pool")
    assert refused.returncode == 2, refused.stderr
    assert f"1 queued run(s) target tgt-pool ({queued})" in refused.stderr
    assert f"1 active run(s) run on tgt-pool ({running})" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert state_of(inst, queued) == "Queued"  # nothing changed

    inst.json("compute", "delete", "tgt-pool", "--force")
    failed = inst.cli("run", "wait", queued, timeout=60)
    assert failed.returncode == 1
    assert "Failed: target_deleted: its target tgt-pool was deleted" in failed.stderr
    canceled = inst.cli("run", "wait", running, timeout=60)
    assert "Canceled" in canceled.stderr

    late = inst.cli("run", "submit", str(tmp_path), "--script", "long.py", "--target", "tgt-pool")
    assert late.returncode == 2
    assert (
        "compute target 'tgt-pool' is being deleted" in late.stderr
        or "unknown compute target 'tgt-pool'" in late.stderr
    ), late.stderr
    wait_until(lambda: "tgt-pool" not in computes(inst), timeout=60)
    gone = inst.cli("run", "submit", str(tmp_path), "--script", "long.py", "--target", "tgt-pool")
    assert gone.returncode == 2 and "unknown compute target 'tgt-pool'" in gone.stderr
    status = inst.json("status")
    assert isinstance(status, dict)
    assert "tgt-pool" not in [t["name"] for t in status["targets"]]
    assert not [a for a in status["agents"] if a["target"] == "tgt-pool"]


def test_a_run_without_an_agent_says_why_and_its_queue_timeout_fails_it(
    installation: Installation, ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = installation
    # a 1-GPU size, but the process provider was lent no GPU: every node fails to start
    inst.json("compute", "create", "no-gpu", "--vm-size", "STANDARD_NC6", "--max-nodes", "1")
    (tmp_path / "t.py").write_text("print('never')\n")
    rc = RunConfiguration(target="no-gpu", gpus=1, queue_timeout_seconds=20)
    run = Experiment(ws, "targets").submit(
        ScriptRunConfig(source_directory=tmp_path, script="t.py", run_config=rc)
    )

    def why() -> str | None:
        out = inst.cli("run", "why", run.id, check=True).stdout
        return out if "has no agent: provisioning failed: insufficient_gpus" in out else None

    said = wait_until(why, timeout=20)
    assert said.startswith("queued: target no-gpu has no agent: provisioning failed: ")
    assert " ago)" in said
    shown = inst.cli("run", "show", run.id, check=True).stdout
    assert "waiting" in shown and "target no-gpu has no agent: provisioning failed" in shown
    status = inst.cli("status", check=True).stdout
    assert "target no-gpu has no agent: provisioning failed" in status

    # a new run is refused with the target's error
    refused = inst.cli(
        "run", "submit", str(tmp_path), "--script", "t.py", "--target", "no-gpu", "--gpus", "1"
    )
    assert refused.returncode == 2
    assert "compute target 'no-gpu' failed to provision (insufficient_gpus:" in refused.stderr

    details = run.wait_for_completion(show_output=True, raise_on_error=False)
    out = capsys.readouterr().out
    assert f"[{run.id}] queued: target no-gpu has no agent: provisioning failed" in out
    assert details["state"] == "Failed"
    assert details["error"]["kind"] == "queue_timeout"
    assert details["error"]["message"].startswith("still queued after 2")
    assert "queue timeout 20s): target no-gpu has no agent" in details["error"]["message"]

    # an update tries the cluster again; the CLI's --queue-timeout fails its run the same way
    inst.json("compute", "update", "no-gpu", "--max-nodes", "1")
    again = submit(
        inst, tmp_path, "t.py", "--target", "no-gpu", "--gpus", "1", "--queue-timeout", "3"
    )
    waited = inst.cli("run", "wait", again, timeout=60)
    assert waited.returncode == 1 and "Failed: queue_timeout: still queued after" in waited.stderr
    inst.json("compute", "delete", "no-gpu", "--force")


def test_a_failed_attach_refuses_runs_and_attaching_again_retries_in_place(
    installation: Installation, ws: Workspace, tmp_path: Path
) -> None:
    inst = installation
    closed = free_port()  # nothing listens there: the attach fails at once
    args = (
        "compute", "attach", "dead-box", "--address", "127.0.0.1", "--ssh-port", str(closed),
        "--username", "nobody", "--password-env", "DEAD_BOX_PW",
        "--known-hosts", str(tmp_path / "known_hosts"),
    )  # fmt: skip
    env = {"DEAD_BOX_PW": "not-a-real-password"}
    first = inst.cli(*args, env=env, timeout=60)
    assert first.returncode == 1, first.stderr
    assert "Failed" in first.stdout and "unreachable" in first.stdout
    (tmp_path / "t.py").write_text("print(1)\n")
    refused = inst.cli("run", "submit", str(tmp_path), "--script", "t.py", "--target", "dead-box")
    assert refused.returncode == 2
    assert "attaching compute target 'dead-box' failed (unreachable:" in refused.stderr
    assert "sortie compute attach dead-box" in refused.stderr

    again = inst.cli(*args, env=env, timeout=60)
    assert again.returncode == 1 and "exists" not in again.stderr, again.stderr
    assert "attaching again" in again.stderr
    assert "not-a-real-password" not in again.stdout + again.stderr

    # a plain detach of a machine whose attach failed works, and the SDK waits for it
    target = ComputeTarget(ws, "dead-box")
    target.detach()
    assert target.wait_for_completion(timeout_s=30) == "Detached"
    assert "dead-box" not in computes(inst)

    # the same from the SDK: the configuration object, then the refusal
    t2 = ComputeTarget.attach(
        ws,
        "dead-box2",
        RemoteCompute.attach_configuration(
            address="127.0.0.1", ssh_port=closed, username="nobody", password="x"
        ),
    )
    assert t2.wait_for_completion(timeout_s=30) == "Failed"
    done = inst.cli("compute", "detach", "dead-box2", timeout=60)
    assert done.returncode == 0 and "Detached dead-box2" in done.stdout, done.stderr


def test_sdk_waits_for_a_delete_to_finish(ws: Workspace) -> None:
    target = ComputeTarget.create(
        ws, "short-pool", ClusterConfiguration(vm_size="LOCAL_SMALL", max_nodes=1)
    )
    assert target.wait_for_completion(timeout_s=30) == "Succeeded"
    target.delete()
    assert target.wait_for_completion(timeout_s=30) == "Deleted"
    assert "short-pool" not in [t.name for t in ComputeTarget.list(ws)]


def test_run_based_creation_makes_a_cluster_for_the_run_and_removes_it(
    installation: Installation, ws: Workspace, tmp_path: Path
) -> None:
    inst = installation
    (tmp_path / "t.py").write_text("import os\nprint('on', os.environ['SORTIE_TARGET'])\n")
    before = set(computes(inst))
    done = inst.cli(
        "run", "submit", str(tmp_path), "--script", "t.py", "--target", "amlcompute",
        "--vm-size", "local_small", "--wait", timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = re.search(r"^on (run-[0-9a-f]+)$", done.stdout, re.MULTILINE)
    assert found is not None, done.stdout  # the run ran on its own cluster
    temporary = found.group(1)
    assert f" to {temporary} (made for this run)" in done.stderr
    assert temporary not in before
    wait_until(lambda: temporary not in computes(inst), timeout=60)

    refused = inst.cli("run", "submit", str(tmp_path), "--script", "t.py", "--target", "amlcompute")
    assert refused.returncode == 2 and "run_config.amlcompute.vm_size" in refused.stderr

    rc = RunConfiguration(target="amlcompute")
    rc.amlcompute.vm_size = "LOCAL_SMALL"
    rc.amlcompute._cluster_max_node_count = 1
    run = Experiment(ws, "targets").submit(
        ScriptRunConfig(source_directory=tmp_path, script="t.py", run_config=rc)
    )
    details = run.wait_for_completion()
    assert details["state"] == "Completed" and details["target"].startswith("run-")
    deadline = time.monotonic() + 60
    while details["target"] in computes(inst):
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_nodes_the_autoscaler_stopped_show_as_stopped_not_lost(
    installation: Installation, tmp_path: Path
) -> None:
    inst = installation
    inst.json(
        "compute", "create", "idle-pool", "--vm-size", "local_small", "--max-nodes", "1",
        "--idle-seconds-before-scaledown", "1",
    )  # fmt: skip
    (tmp_path / "t.py").write_text("print('done')\n")
    run_id = submit(inst, tmp_path, "t.py", "--target", "idle-pool")
    assert inst.cli("run", "wait", run_id, timeout=90).returncode == 0

    def scaled_down() -> dict | None:
        shown = inst.json("compute", "show", "idle-pool")
        assert isinstance(shown, dict)
        stopped = [n for n in shown["node_list"] if n["state"] == "stopped"]
        return shown if shown["nodes"]["current"] == 0 and stopped else None

    shown = wait_until(scaled_down, timeout=60)
    (node,) = [n["node_id"] for n in shown["node_list"]]
    status = inst.json("status")
    assert isinstance(status, dict)
    states = {a["agent_id"]: a["state"] for a in status["agents"]}
    assert states.get(node) == "stopped", states
    text = inst.cli("status", check=True).stdout
    line = next(ln for ln in text.splitlines() if ln.startswith(node))
    assert "stopped" in line and "lost" not in line
    inst.json("compute", "delete", "idle-pool")


def test_v1_run_based_creation_with_sortie_azureml_imports(
    installation: Installation, tmp_path: Path
) -> None:
    from sortie.azureml.core import Experiment as V1Experiment
    from sortie.azureml.core import ScriptRunConfig as V1ScriptRunConfig
    from sortie.azureml.core import Workspace as V1Workspace
    from sortie.azureml.core.runconfig import RunConfiguration as V1RunConfiguration

    (tmp_path / "train.py").write_text("import os\nprint('on', os.environ['SORTIE_TARGET'])\n")
    config = Path(installation.env["SORTIE_PROFILE"]).with_name("config.json")
    with V1Workspace.from_config(path=config) as v1ws:
        run_config = V1RunConfiguration()
        run_config.target = "amlcompute"
        run_config.amlcompute.vm_size = "LOCAL_SMALL"
        run_config.amlcompute._cluster_max_node_count = 1
        run_config.environment.python.user_managed_dependencies = True
        src = V1ScriptRunConfig(
            source_directory=str(tmp_path), script="train.py", run_config=run_config
        )
        run = V1Experiment(workspace=v1ws, name="run-based").submit(src)
        details = run.wait_for_completion(show_output=True)
        assert details["state"] == "Completed"
        target = details["target"]  # the cluster made for the run
        assert target.startswith("run-")
    wait_until(lambda: target not in computes(installation), timeout=60)
