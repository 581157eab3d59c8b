"""Attaching a Slurm cluster's login node and a Spark cluster's head node through the real CLI
and SDK, against a real `sortie up`, the tests' sshd (this host, as the unprivileged test
user) and the real one-node Slurm and standalone Spark of tests/engines: the attach succeeds,
the remote agent is started with its engine and heartbeats as such, the target is listed as
one, and runs sent there are handed to the engine: they complete with their logs, metrics and
artifacts, a two-task Slurm run sees its ranks, a run Slurm holds says why in `run why`,
cancel and the max duration end the job, a run Slurm preempts for a higher partition's job is
requeued and completes, and a PySpark run aggregates a DataFrame."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Installation, wait_until
from tests.e2e.conftest import installation as installation  # the fixture, shared
from tests.engines.slurm_cluster import SlurmCluster
from tests.engines.spark_cluster import SparkCluster
from tests.ssh.conftest import SSH_TEST_USER, ClientKey, Sshd
from tests.ssh.conftest import authorized as authorized  # the fixtures, shared
from tests.ssh.conftest import client_key as client_key
from tests.ssh.conftest import known_hosts as known_hosts
from tests.ssh.conftest import sshd as sshd
from tests.ssh.test_attach_e2e import detach, key_file, show

pytestmark = pytest.mark.timeout(600)


def slurm_attach_args(
    name: str, sshd: Sshd, known_hosts: Path, key: Path, slurm: SlurmCluster, *extra: str
) -> list[str]:
    return [
        "compute",
        "attach",
        name,
        "--type",
        "slurm",
        "--partition",
        slurm.partition,
        "--address",
        sshd.host,
        "--ssh-port",
        str(sshd.port),
        "--username",
        SSH_TEST_USER,
        "--known-hosts",
        str(known_hosts),
        "--private-key-file",
        str(key),
        # the test cluster's configuration is not in /etc/slurm: its tools find it here
        "--agent-env",
        f"SLURM_CONF={slurm.conf}",
        *extra,
    ]


def agents(inst: Installation) -> list[dict]:
    out = inst.json("agent", "list")
    assert isinstance(out, list)
    return out


def test_a_slurm_login_node_attaches_and_its_agent_hands_runs_to_slurm(  # noqa: PLR0917  # pytest passes fixtures by name
    installation: Installation,
    sshd: Sshd,
    known_hosts: Path,
    client_key: ClientKey,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    # a flag of another engine is refused before anything is attached
    wrong = installation.cli(
        *slurm_attach_args("hpc", sshd, known_hosts, key, slurm, "--master", "yarn")
    )
    assert wrong.returncode != 0 and "--master is for --type spark" in wrong.stderr
    assert "hpc" not in [c["name"] for c in installation.json("compute", "list")]

    proc = installation.cli(*slurm_attach_args("hpc", sshd, known_hosts, key, slurm), timeout=300)
    assert proc.returncode == 0, proc.stderr
    vm = show(installation, "hpc")
    assert vm["provisioning_state"] == "Succeeded" and vm["link"] == "connected"
    assert vm["engine"]["engine"] == "slurm"
    assert vm["engine"]["partition"] == slurm.partition

    # the remote agent was started with --engine: it says so in every heartbeat
    hpc = wait_until(
        lambda: next((a for a in agents(installation) if a["agent_id"] == "hpc"), None),
        timeout=60,
    )
    assert hpc["engine"] == "slurm" and hpc["target"] == "hpc" and hpc["state"] == "ready"
    assert hpc["capacity"]["cpus"] > 0

    listed = installation.cli("compute", "list", check=True).stdout
    (row,) = [line.split() for line in listed.splitlines() if line.startswith("hpc ")]
    assert row[1] == "slurm"
    shown = installation.cli("compute", "show", "hpc", check=True).stdout
    assert f"slurm: partition {slurm.partition}, account (default), qos (default)" in shown
    assert "engine=slurm" in installation.cli("agent", "list", check=True).stdout

    detach(installation, "hpc")


def test_a_spark_head_node_attaches_from_v1s_sdk_as_hdinsight(
    installation: Installation,
    sshd: Sshd,
    *,
    known_hosts: Path,
    client_key: ClientKey,
    spark: SparkCluster,
    tmp_path: Path,
) -> None:
    from sortie.azureml.core import Workspace
    from sortie.azureml.core.compute import ComputeTarget, HDInsightCompute

    key = key_file(tmp_path, client_key)
    config_file = Path(installation.env["SORTIE_PROFILE"]).with_name("config.json")
    with Workspace.from_config(path=config_file) as ws:
        config = HDInsightCompute.attach_configuration(
            address=sshd.host,
            ssh_port=sshd.port,
            username=SSH_TEST_USER,
            private_key_file=str(key),
            known_hosts=str(known_hosts),
            master=spark.master_url,
            conf={"spark.executor.memory": "512m"},
            agent_env=spark.env,
        )
        target = ComputeTarget.attach(ws, "sparky", config)
        assert isinstance(target, HDInsightCompute)
        target.wait_for_completion(show_output=True)
        assert target.provisioning_state == "Succeeded"
        assert target.get_status()["engine"] == {
            "engine": "spark",
            "master": spark.master_url,
            "conf": {"spark.executor.memory": "512m"},
            "submit": "spark-submit",
            "ui_port": 8080,
        }
        # looked up again, or listed, it is an HDInsightCompute
        assert isinstance(ComputeTarget(ws, "sparky"), HDInsightCompute)
        listed = [t for t in ComputeTarget.list(ws) if t.name == "sparky"]
        assert [type(t) for t in listed] == [HDInsightCompute]
    sparky = wait_until(
        lambda: next((a for a in agents(installation) if a["agent_id"] == "sparky"), None),
        timeout=60,
    )
    assert sparky["engine"] == "spark" and sparky["state"] == "ready"
    rows = installation.cli("compute", "list", check=True).stdout.splitlines()
    assert [row.split()[1] for row in rows if row.startswith("sparky ")] == ["spark"]
    detach(installation, "sparky")


def submit(inst: Installation, src: Path, target: str, *flags: str) -> str:
    sub = inst.json("run", "submit", str(src), "--script", "job.py", "--target", target, *flags)
    assert isinstance(sub, dict)
    return str(sub["run_id"])


def run_show(inst: Installation, run_id: str) -> dict:
    shown = inst.json("run", "show", run_id)
    assert isinstance(shown, dict)
    return shown


SLURM_JOB = """
import os, sys, time
from sortie import Run
run = Run.get_context()
print("slurm job", os.environ.get("SLURM_JOB_ID"), "rank", os.environ["RANK"], "of",
      os.environ["WORLD_SIZE"], flush=True)
if "--sleep" in sys.argv:
    time.sleep(float(sys.argv[-1]))
if os.environ["RANK"] == "0":
    run.log("accuracy", 0.75)
    os.makedirs("outputs", exist_ok=True)
    open("outputs/result.txt", "w").write("done in slurm")
print("finished", flush=True)
"""


def test_runs_on_an_attached_slurm_cluster(
    installation: Installation,
    sshd: Sshd,
    *,
    known_hosts: Path,
    client_key: ClientKey,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    proc = installation.cli(*slurm_attach_args("hpc2", sshd, known_hosts, key, slurm), timeout=300)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: any(a["agent_id"] == "hpc2" for a in agents(installation)), timeout=60)
    src = tmp_path / "job"
    src.mkdir()
    (src / "job.py").write_text(SLURM_JOB)
    python = ("--python", sys.executable)

    # a run completes with its logs, metric and artifact, and says which Slurm job it was
    run_id = submit(installation, src, "hpc2", *python)
    done = installation.cli("run", "wait", run_id, timeout=300)
    logs = installation.cli("run", "logs", run_id).stdout
    assert done.returncode == 0, done.stderr + logs
    shown = run_show(installation, run_id)
    assert shown["state"] == "Completed"
    assert shown["metrics"]["accuracy"] == [0.75]
    assert shown["artifacts"] == ["outputs/result.txt"]
    job = shown["engine_job"]
    assert job["engine"] == "slurm" and job["state"] == "COMPLETED" and job["job_id"]
    assert f"slurm job {job['job_id']} rank 0 of 1" in logs and "finished" in logs
    assert f"slurm job {job['job_id']}: " in installation.cli("run", "show", run_id).stdout
    out = tmp_path / "out"
    installation.cli("run", "download", run_id, str(out), check=True)
    assert (out / run_id / "outputs" / "result.txt").read_text() == "done in slurm"

    # two tasks on the one node: ranks 0 and 1 of 2, in one Slurm job on the one agent
    run_id = submit(installation, src, "hpc2", *python, "--processes-per-node", "2")
    assert installation.cli("run", "wait", run_id, timeout=300).returncode == 0
    logs = installation.cli("run", "logs", run_id).stdout
    job_id = run_show(installation, run_id)["engine_job"]["job_id"]
    for rank in (0, 1):
        assert f"slurm job {job_id} rank {rank} of 2" in logs
    # an environment Sortie builds (uv, on the login node, in the agent's cache the job's
    # nodes see): the job runs in it, imports what it asked for, and still logs through Run
    (src / "uses_six.py").write_text(USES_SIX)
    built = installation.json(
        "run", "submit", str(src), "--script", "uses_six.py", "--target", "hpc2", "--pip", "six"
    )
    assert isinstance(built, dict)
    run_id = str(built["run_id"])
    done = installation.cli("run", "wait", run_id, timeout=400)
    logs = installation.cli("run", "logs", run_id).stdout
    assert done.returncode == 0, done.stderr + logs
    assert "building environment" in logs
    shown = run_show(installation, run_id)
    assert shown["metrics"]["six_major"] == [1]
    interpreter = next(line for line in logs.splitlines() if line.startswith("interpreter "))
    assert sys.executable not in interpreter and "/envs/" in interpreter
    assert shown["engine_job"]["state"] == "COMPLETED"

    # more than one process per node is Slurm's alone: refused elsewhere, saying so
    refused = installation.cli(
        "run", "submit", str(src), "--script", "job.py", "--processes-per-node", "2"
    )
    assert refused.returncode == 2 and "only a Slurm target" in refused.stderr

    # a run that takes every CPU, then one that must wait: Slurm's reason is in `run why`
    cpus = str(slurm.cpus)
    hog = submit(installation, src, "hpc2", *python, "--cpus", cpus, "--arg=--sleep", "--arg=300")
    wait_until(lambda: run_show(installation, hog)["state"] == "Running", timeout=120)
    waits = submit(installation, src, "hpc2", *python, "--cpus", cpus)

    def held() -> dict | None:
        job = run_show(installation, waits).get("engine_job")
        return job if job and job["state"] == "PENDING" and job["reason"] else None

    pending = wait_until(held, timeout=120)
    assert pending["reason"] in ("Resources", "Priority")
    why = installation.cli("run", "why", waits, check=True).stdout
    assert f"waiting in slurm's queue: {pending['reason']}" in why
    # shown Queued (v1's "queued in the compute target"); its record is Starting: placed once
    shown = run_show(installation, waits)
    assert shown["state"] == "Queued" and shown["history"][-1]["state"] == "Starting"
    listed = installation.cli("run", "list", check=True).stdout
    assert any(row.split()[0] == waits and "Queued" in row.split() for row in listed.splitlines())

    # cancel is scancel: both jobs end CANCELLED in Slurm, both runs Canceled (the waiting
    # one first: once the first is gone it would run, and end before its cancel)
    for run_id in (waits, hog):
        installation.cli("run", "cancel", run_id, check=True)
    for run_id in (hog, waits):
        wait_until(lambda r=run_id: run_show(installation, r)["state"] == "Canceled", timeout=120)
        job_id = run_show(installation, run_id)["engine_job"]["job_id"]
        state = slurm.command("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()
        assert state == "CANCELLED"

    # a run over its max duration ends with the timeout error, its job cancelled
    late = submit(
        installation, src, "hpc2", *python, "--max-duration", "8", "--arg=--sleep", "--arg=300"
    )
    assert installation.cli("run", "wait", late, timeout=300).returncode != 0
    shown = run_show(installation, late)
    assert shown["state"] == "Failed" and shown["error"]["kind"] == "timeout"
    job_id = shown["engine_job"]["job_id"]
    assert slurm.command("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip() == (
        "CANCELLED"
    )
    detach(installation, "hpc2")


USES_SIX = """
import os, sys
import six
from sortie import Run
print("interpreter", sys.executable, "slurm job", os.environ.get("SLURM_JOB_ID"), flush=True)
Run.get_context().log("six_major", int(six.__version__.split(".")[0]))
"""


PREEMPTIBLE_JOB = """
import os, time
from sortie import Run
run = Run.get_context()
attempt = os.environ["SORTIE_ATTEMPT"]
print("attempt", attempt, "slurm job", os.environ.get("SLURM_JOB_ID"), flush=True)
if attempt == "1":
    time.sleep(300)  # preempted before it ends
run.log("attempt", int(attempt))
print("finished", flush=True)
"""


def test_a_slurm_run_preempted_by_a_higher_partition_is_requeued_and_completes(
    installation: Installation,
    sshd: Sshd,
    *,
    known_hosts: Path,
    client_key: ClientKey,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    """Slurm cancels the run's job (PREEMPTED) for a job of a partition with a higher
    PriorityTier: Sortie's preemption rules requeue the run as a new attempt, free of
    max_retries, and the new attempt's job waits for the node, then completes."""
    key = key_file(tmp_path, client_key)
    proc = installation.cli(*slurm_attach_args("hpc3", sshd, known_hosts, key, slurm), timeout=300)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: any(a["agent_id"] == "hpc3" for a in agents(installation)), timeout=60)
    try:
        src = tmp_path / "job"
        src.mkdir()
        (src / "job.py").write_text(PREEMPTIBLE_JOB)
        run_id = submit(installation, src, "hpc3", "--python", sys.executable, "--max-retries", "0")

        def running() -> dict | None:
            shown = run_show(installation, run_id)
            job = shown.get("engine_job")
            return (
                shown if shown["state"] == "Running" and job and job["state"] == "RUNNING" else None
            )

        first = wait_until(running, timeout=120)
        assert first["attempt"] == 1
        first_job = first["engine_job"]["job_id"]
        high = slurm.command(
            "sbatch", "--parsable", f"--partition={slurm.high_partition}",
            f"--cpus-per-task={slurm.cpus}", f"--chdir={tmp_path}", "--output=/dev/null",
            "--wrap", "sleep 300",
        ).strip()  # fmt: skip
        try:
            # requeued as attempt 2, whose job waits in Slurm's queue for the node
            def second_job_waits() -> dict | None:
                shown = run_show(installation, run_id)
                job = shown.get("engine_job")
                waiting = job and job["job_id"] != first_job and job["state"] == "PENDING"
                return shown if shown["attempt"] == 2 and waiting else None

            requeued = wait_until(second_job_waits, timeout=120)
            assert requeued["preemptions"] == 1 and requeued["retries_used"] == 0
            assert requeued["error"] is None
            steps = [(h["state"], h["attempt"], h["reason"]) for h in requeued["history"]]
            assert ("Preempted", 1, "node preempted") in steps
            assert steps.index(("Preempted", 1, "node preempted")) + 1 == steps.index(
                ("Queued", 2, "preempted")
            )
            squeue = ("squeue", "-h", "-t", "all", "-o", "%T", "-j")
            assert slurm.command(*squeue, first_job).strip() == "PREEMPTED"
            assert slurm.command(*squeue, high).strip() == "RUNNING"
            logs = installation.cli("run", "logs", run_id).stdout
            assert f"attempt 1 slurm job {first_job}" in logs
            assert f"Slurm preempted job {first_job}; the run will be requeued" in logs
        finally:
            slurm.command("scancel", high)

        # the high job gone, the second attempt runs to its end
        done = installation.cli("run", "wait", run_id, timeout=300)
        logs = installation.cli("run", "logs", run_id).stdout
        assert done.returncode == 0, done.stderr + logs
        final = run_show(installation, run_id)
        assert final["state"] == "Completed" and final["attempt"] == 2
        assert final["preemptions"] == 1 and final["retries_used"] == 0
        assert final["metrics"]["attempt"] == [2]
        job = final["engine_job"]
        assert job["state"] == "COMPLETED" and job["job_id"] != first_job
        assert f"attempt 2 slurm job {job['job_id']}" in logs and "finished" in logs
        states = [h["state"] for h in final["history"]]
        assert states.count("Preempted") == 1 and states[-1] == "Completed"
    except BaseException:
        installation.cli("compute", "detach", "hpc3")  # no agent left behind as the test user
        raise
    detach(installation, "hpc3")


SPARK_JOB = """
import sys
from pyspark.sql import SparkSession, functions as F
from sortie import Run
run = Run.get_context()
spark = SparkSession.builder.getOrCreate()
df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], ["key", "value"])
totals = {r.key: r.total for r in df.groupBy("key").agg(F.sum("value").alias("total")).collect()}
print("totals", sorted(totals.items()), flush=True)
run.log("total_a", totals["a"])
import os, json
os.makedirs("outputs", exist_ok=True)
json.dump(totals, open("outputs/totals.json", "w"))
spark.stop()
"""


def test_a_pyspark_run_on_an_attached_spark_cluster(
    installation: Installation,
    sshd: Sshd,
    *,
    known_hosts: Path,
    client_key: ClientKey,
    spark: SparkCluster,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    agent_env = [f"--agent-env={k}={v}" for k, v in spark.env.items()]
    proc = installation.cli(
        "compute", "attach", "lake", "--type", "spark", "--address", sshd.host,
        "--ssh-port", str(sshd.port), "--username", SSH_TEST_USER,
        "--known-hosts", str(known_hosts), "--private-key-file", str(key),
        "--master", spark.master_url, "--submit", str(spark.spark_submit),
        "--ui-port", str(spark.ui_port), "--conf", "spark.executor.memory=512m",
        *agent_env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lake = wait_until(
        lambda: next((a for a in agents(installation) if a["agent_id"] == "lake"), None),
        timeout=60,
    )
    assert lake["engine"] == "spark"
    assert lake["capacity"]["cpus"] == 1  # the cluster's one worker, not this host
    src = tmp_path / "job"
    src.mkdir()
    (src / "job.py").write_text(SPARK_JOB)
    # the driver runs the environment the run names: here one that has pyspark
    run_id = submit(installation, src, "lake", "--python", sys.executable)
    done = installation.cli("run", "wait", run_id, timeout=400)
    logs = installation.cli("run", "logs", run_id).stdout
    assert done.returncode == 0, done.stderr + logs
    assert "totals [('a', 4), ('b', 2)]" in logs
    shown = run_show(installation, run_id)
    assert shown["metrics"]["total_a"] == [4]
    assert shown["artifacts"] == ["outputs/totals.json"]
    job = shown["engine_job"]
    assert job["engine"] == "spark" and job["job_id"].startswith("app-")
    out = tmp_path / "out"
    installation.cli("run", "download", run_id, str(out), check=True)
    assert json.loads((out / run_id / "outputs" / "totals.json").read_text()) == {"a": 4, "b": 2}
    finished = [app["id"] for app in spark.state()["completedapps"]]  # type: ignore[index]
    assert job["job_id"] in finished
    detach(installation, "lake")
