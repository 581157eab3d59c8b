"""Clusters with real agent processes from the process provider, through the CLI and SDK."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Installation, shared_dir, wait_until


def show(inst: Installation, name: str) -> dict:
    out = inst.json("compute", "show", name)
    assert isinstance(out, dict)
    return out


def test_compute_commands_and_their_refusals(installation: Installation) -> None:
    sizes = installation.json("compute", "sizes")
    assert isinstance(sizes, list)
    names = {s["name"] for s in sizes}
    assert {"LOCAL_SMALL", "STANDARD_NC6S_V3"} <= names
    assert all({"name", "cpus", "memory_mb", "gpus", "gpu_type"} <= set(s) for s in sizes)

    made = installation.json(
        "compute",
        "create",
        "cli-pool",
        "--type",
        "cluster",
        "--vm-size",
        "local_small",
        "--max-nodes",
        "2",
    )
    assert isinstance(made, dict) and made["vm_size"] == "LOCAL_SMALL"
    assert made["provisioning_state"] in ("Creating", "Succeeded")
    refusals = [
        (
            ("compute", "create", "a", "--vm-size", "local_small", "--max-nodes", "1"),
            "2 to 16 characters, letters, digits and hyphens, starting with a letter",
        ),
        (
            ("compute", "create", "pool-b", "--vm-size", "nope", "--max-nodes", "1"),
            "unknown vm size 'nope'",
        ),
        (
            (
                "compute",
                "create",
                "pool-c",
                "--vm-size",
                "local_small",
                "--max-nodes",
                "1",
                "--min-nodes",
                "2",
            ),
            "min_nodes (2) is greater than max_nodes (1)",
        ),
        (
            ("compute", "create", "cli-pool", "--vm-size", "local_small", "--max-nodes", "1"),
            "named 'cli-pool' exists",
        ),
        (("compute", "update", "cli-pool", "--min-nodes", "5"), "greater than max_nodes"),
        (("compute", "show", "ghost"), "no compute target 'ghost'"),
    ]
    for args, expected in refusals:
        proc = installation.cli(*args)
        assert proc.returncode == 2 and expected in proc.stderr, (args, proc.stderr)
    updated = installation.json(
        "compute", "update", "cli-pool", "--max-nodes", "3", "--idle-seconds-before-scaledown", "60"
    )
    assert isinstance(updated, dict)
    assert (updated["max_nodes"], updated["idle_seconds_before_scaledown"]) == (3, 60)
    listed = installation.json("compute", "list")
    assert isinstance(listed, list) and "cli-pool" in [c["name"] for c in listed]
    targets = installation.cli(
        "run", "submit", str(Path(__file__).parent), "--script", "nope.py", "--target", "cli-pool"
    )
    assert "was not found" in targets.stderr  # the target is known; the script is not
    installation.json("compute", "delete", "cli-pool")
    wait_until(lambda: "cli-pool" not in [c["name"] for c in installation.json("compute", "list")])


def test_scale_from_zero_under_load_and_back_to_min_after_idle(
    installation: Installation, tmp_path: Path
) -> None:
    installation.json(
        "compute",
        "create",
        "burst",
        "--vm-size",
        "local_small",
        "--max-nodes",
        "3",
        "--idle-seconds-before-scaledown",
        "3",
    )
    (tmp_path / "work.py").write_text(
        "import os, time\nprint('on', os.environ['SORTIE_TARGET'], flush=True)\ntime.sleep(4)\n"
    )
    runs = []
    for _ in range(4):
        sub = installation.json(
            "run", "submit", str(tmp_path), "--script", "work.py", "--target", "burst"
        )
        assert isinstance(sub, dict)
        runs.append(sub["run_id"])
    peak = wait_until(
        lambda: (c := show(installation, "burst"))["nodes"]["current"] == 3 and c, timeout=60
    )
    assert peak["decisions"][0]["action"] == "scale_up"
    # one run waits for a free node; `run why` explains while it does
    waiting = [r for r in runs if installation.json("run", "show", r)["state"] == "Queued"]
    if waiting:
        why = installation.cli("run", "why", waiting[0], check=True).stdout
        # it may have been placed in the meantime: then why says so
        assert "queued" in why or "is not waiting" in why, why
    for run_id in runs:
        done = installation.cli("run", "wait", run_id, timeout=120)
        assert done.returncode == 0, done.stderr
    agents = {installation.json("run", "show", r)["agent_id"] for r in runs}
    # all on the cluster's nodes (a node that booted slowly under load may have had no run)
    assert 2 <= len(agents) <= 3 and all(a.startswith("burst-") for a in agents)
    idle = wait_until(
        lambda: (c := show(installation, "burst"))["nodes"]["current"] == 0 and c, timeout=60
    )
    assert idle["decisions"][-1]["action"] == "scale_down"
    assert "idle for" in idle["decisions"][-1]["reason"]
    assert idle["provisioning_state"] == "Succeeded"
    installation.json("compute", "delete", "burst")


def test_delete_refused_while_runs_are_active_unless_forced(
    installation: Installation, tmp_path: Path
) -> None:
    installation.json("compute", "create", "busy", "--vm-size", "local_small", "--max-nodes", "1")
    (tmp_path / "long.py").write_text("import time\ntime.sleep(300)\n")
    sub = installation.json(
        "run", "submit", str(tmp_path), "--script", "long.py", "--target", "busy"
    )
    assert isinstance(sub, dict)
    refused = installation.cli("compute", "delete", "busy")
    # queued while its node starts, active once it runs: either refuses the delete
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert "1 active run(s)" in refused.stderr or "1 queued run(s)" in refused.stderr
    installation.json("compute", "delete", "busy", "--force")
    done = installation.cli("run", "wait", sub["run_id"], timeout=60)
    # an active run is canceled, a queued one fails with target_deleted
    assert "Canceled" in done.stderr or "target_deleted" in done.stderr
    wait_until(
        lambda: "busy" not in [c["name"] for c in installation.json("compute", "list")],
        timeout=60,
    )


def test_submit_refuses_a_run_no_node_shape_can_hold(
    installation: Installation, tmp_path: Path
) -> None:
    installation.json("compute", "create", "small", "--vm-size", "local_small", "--max-nodes", "1")
    (tmp_path / "t.py").write_text("print(1)\n")
    proc = installation.cli(
        "run", "submit", str(tmp_path), "--script", "t.py", "--target", "small", "--gpus", "1"
    )
    assert proc.returncode == 2
    assert "no node of small can hold it" in proc.stderr and "LOCAL_SMALL" in proc.stderr
    installation.json("compute", "delete", "small")


def test_sdk_compute_target(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    from sortie import ClusterConfiguration, ComputeTarget, Workspace

    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    with Workspace.connect() as ws:
        target = ComputeTarget.create(
            ws,
            "sdk-pool",
            ClusterConfiguration(vm_size="LOCAL_SMALL", max_nodes=2, vm_priority="lowpriority"),
        )
        assert target.wait_for_completion() == "Succeeded"
        assert "sdk-pool" in [t.name for t in ComputeTarget.list(ws)]
        target.update(max_nodes=4)
        status = target.get_status()
        assert status["max_nodes"] == 4 and status["vm_priority"] == "lowpriority"
        assert any(s["name"] == "LOCAL_SMALL" for s in ComputeTarget.supported_vmsizes(ws))
        target.delete()
        deadline = time.monotonic() + 30
        while "sdk-pool" in [t.name for t in ComputeTarget.list(ws)]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(Exception, match="greater than max_nodes"):
            ComputeTarget.create(
                ws,
                "bad-pool",
                ClusterConfiguration(vm_size="LOCAL_SMALL", max_nodes=1, min_nodes=2),
            )


def test_two_node_gang_sees_its_rank_environment(
    installation: Installation, tmp_path: Path
) -> None:
    installation.json(
        "compute",
        "create",
        "gang",
        "--vm-size",
        "local_small",
        "--max-nodes",
        "2",
        "--idle-seconds-before-scaledown",
        "2",
    )
    (tmp_path / "dist.py").write_text(
        textwrap.dedent("""
        import os
        keys = ["WORLD_SIZE", "RANK", "NODE_RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"]
        print(" ".join(f"{k}={os.environ[k]}" for k in keys), flush=True)
        hosts = open(os.environ["SORTIE_HOSTFILE"]).read().replace(chr(10), ";")
        print("HOSTS=" + hosts, flush=True)
    """)
    )
    proc = installation.cli(
        "run",
        "submit",
        str(tmp_path),
        "--script",
        "dist.py",
        "--target",
        "gang",
        "--node-count",
        "2",
        "--wait",
        "--output",
        "json",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict) and shown["state"] == "Completed"
    envs = {}
    for rank in (0, 1):
        out = installation.cli("run", "logs", run_id, "--rank", str(rank), check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("WORLD_SIZE"))
        envs[rank] = dict(kv.split("=", 1) for kv in line.split())
        hosts = next(x for x in out.splitlines() if x.startswith("HOSTS="))
        assert hosts.count("slots=1") == 2
    assert envs[0]["WORLD_SIZE"] == envs[1]["WORLD_SIZE"] == "2"
    assert (envs[0]["RANK"], envs[1]["RANK"]) == ("0", "1")
    assert envs[0]["NODE_RANK"] == "0" and envs[1]["NODE_RANK"] == "1"
    assert envs[0]["LOCAL_RANK"] == envs[1]["LOCAL_RANK"] == "0"
    assert envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"]
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
    both = installation.cli("run", "logs", run_id, check=True).stdout
    assert "[rank 0] WORLD_SIZE=2" in both and "[rank 1] WORLD_SIZE=2" in both
    installation.json("compute", "delete", "gang")


def test_preempted_low_priority_run_is_requeued_and_completes(
    installation: Installation, tmp_path: Path
) -> None:
    installation.json(
        "compute",
        "create",
        "spot",
        "--vm-size",
        "local_small",
        "--max-nodes",
        "2",
        "--vm-priority",
        "lowpriority",
        "--idle-seconds-before-scaledown",
        "2",
    )
    # a checkpoint outlives the attempt: kept where every run may write (SORTIE_RUN_WRITABLE)
    marker = shared_dir(installation.data_dir.parent) / f"checkpoint-{tmp_path.name}"
    (tmp_path / "train.py").write_text(
        textwrap.dedent(f"""
        import os, signal, sys, time
        from sortie import Run
        ckpt = {str(marker)!r}
        run = Run.get_context()
        attempt, priority = os.environ["SORTIE_ATTEMPT"], os.environ["SORTIE_NODE_PRIORITY"]
        print("attempt", attempt, "priority", priority, flush=True)
        if os.path.exists(ckpt):
            print("resumed from checkpoint", flush=True)
            sys.exit(0)
        def stop(*_):
            open(ckpt, "w").write(str(run.stop_reason()))
            print("stopping:", run.stop_reason(), flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        print("training", flush=True)
        time.sleep(300)
    """)
    )
    sub = installation.json(
        "run", "submit", str(tmp_path), "--script", "train.py", "--target", "spot"
    )
    assert isinstance(sub, dict)
    run_id = sub["run_id"]
    first = wait_until(
        lambda: (r := installation.json("run", "show", run_id))["state"] == "Running" and r,
        timeout=60,
    )
    wait_until(lambda: "training" in installation.cli("run", "logs", run_id).stdout, timeout=30)
    installation.json("agent", "preempt", first["agent_id"])
    done = installation.cli("run", "wait", run_id, timeout=120)
    assert done.returncode == 0, done.stderr
    final = installation.json("run", "show", run_id)
    assert isinstance(final, dict) and final["state"] == "Completed"
    assert final["attempt"] == 2 and final["agent_id"] != first["agent_id"]
    assert marker.read_text() == "preempted"
    reasons = [h.get("reason") for h in final["history"]]
    assert "preempted" in reasons
    states = [h["state"] for h in final["history"]]
    assert states.count("Preempted") == 1 and states[-1] == "Completed"
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "stopping: preempted" in logs and "resumed from checkpoint" in logs
    assert "priority lowpriority" in logs
    spot = show(installation, "spot")
    assert spot["nodes"]["preempted"] >= 1 or any(
        d["action"] == "node_preempted" for d in spot["decisions"]
    )
    installation.json("compute", "delete", "spot", "--force")


def test_provider_errors_are_reported_and_backed_off(
    installation: Installation, tmp_path: Path
) -> None:
    # a 1-GPU node size, but no GPUs were lent to the process provider (--gpu-pool)
    installation.json("compute", "create", "nogpu", "--vm-size", "STANDARD_NC6", "--max-nodes", "1")
    (tmp_path / "t.py").write_text("print(1)\n")
    sub = installation.json(
        "run", "submit", str(tmp_path), "--script", "t.py", "--target", "nogpu", "--gpus", "1"
    )
    assert isinstance(sub, dict)
    failed = wait_until(
        lambda: (c := show(installation, "nogpu"))["provisioning_errors"] and c, timeout=30
    )
    assert failed["provisioning_state"] == "Failed"
    err = failed["provisioning_errors"][0]
    assert err["code"] == "insufficient_gpus" and "GPU" in err["message"]
    assert any(d["action"] == "node_failed" for d in failed["decisions"])

    def backing_off() -> dict | None:
        c = show(installation, "nogpu")
        return c if any(d["action"] == "backoff" for d in c["decisions"]) else None

    backoff = wait_until(backing_off, timeout=30)
    assert "backing off after provider errors" in backoff["decisions"][-1]["reason"]
    why = installation.cli("run", "why", sub["run_id"], check=True).stdout
    assert "queued" in why
    installation.json("compute", "delete", "nogpu", "--force")
