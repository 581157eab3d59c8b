"""Attaching a Slurm cluster's login node through the real CLI, against a real `sortie up`,
the tests' sshd (this host, as the unprivileged test user) and the real one-node Slurm of
tests/engines/slurm_cluster.py: the attach succeeds, the remote agent is started with its
engine and heartbeats as a Slurm agent, and the target is listed as a slurm target."""

from __future__ import annotations

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
