"""Attaching a Slurm or Spark cluster from the SDK: the native SlurmCompute / SparkCompute and
v1's HDInsightCompute build the attach request the CLI sends (VmConfig.engine); bad input is
refused saying what was wrong. Pure (no broker): the request is built, not sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.azureml.core.compute import ComputeTarget, HDInsightCompute, RemoteCompute
from sortie.azureml.core.compute.compute import _kind_of
from sortie.azureml.exceptions import ComputeTargetException
from sortie.client.sdk import SlurmCompute, SparkCompute
from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine, SparkEngine


def test_slurm_attach_configuration_builds_the_request(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("KEY")
    config = SlurmCompute.attach_configuration(
        "login1", username="u", private_key_file=str(key), partition="gpu", qos="high"
    )
    req = config.to_request("hpc")
    assert req.vm.engine == SlurmEngine(partition="gpu", qos="high")
    assert (req.vm.address, req.vm.ssh.username, req.vm.ssh.auth) == ("login1", "u", "key")
    assert req.secret is not None and req.secret.private_key == "KEY"


def test_spark_attach_configuration_builds_the_request() -> None:
    config = SparkCompute.attach_configuration(
        "head",
        username="u",
        password="pw",
        master="spark://head:7077",
        conf={"spark.executor.cores": "2"},
    )
    req = config.to_request("sp")
    assert req.vm.engine == SparkEngine(
        master="spark://head:7077", conf={"spark.executor.cores": "2"}
    )
    assert "pw" not in repr(config)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (
            lambda: SlurmCompute.attach_configuration("h", username="u", password="p", qos="a b"),
            "qos 'a b' is not a Slurm name",
        ),
        (
            lambda: SparkCompute.attach_configuration("h", username="u", password="p", master="x"),
            "master 'x' is not valid: use spark://HOST:PORT, yarn, or local[N]",
        ),
        (
            lambda: SparkCompute.attach_configuration(
                "h", username="u", password="p", conf={"executor.cores": "2"}
            ),
            "are named spark.SOMETHING",
        ),
    ],
)
def test_bad_engine_settings_are_refused_with_what_to_write(make: object, said: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        make()  # type: ignore[operator]
    assert said in str(err.value)


def test_the_configuration_refuses_unknown_attributes() -> None:
    config = SlurmCompute.attach_configuration("h", username="u", password="p")
    with pytest.raises(AttributeError, match="did you mean 'engine'"):
        config.engin = None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="give username="):
        SlurmCompute.attach_configuration("h", password="p")


def test_hdinsight_attach_configuration_has_v1s_names_and_refusals() -> None:
    config = HDInsightCompute.attach_configuration(
        address="head", ssh_port=22, username="u", password="pw"
    )
    assert config.engine == SparkEngine(master="yarn")
    assert config.to_request("hdi").vm.ssh.ssh_port == 22
    with pytest.raises(ComputeTargetException, match="give address="):
        HDInsightCompute.attach_configuration(resource_id="/subscriptions/x", username="u")
    with pytest.raises(ComputeTargetException, match="username is not provided"):
        HDInsightCompute.attach_configuration(address="head", password="p")
    with pytest.raises(ComputeTargetException, match="either password= or private_key_file="):
        HDInsightCompute.attach_configuration(address="head", username="u")
    with pytest.raises(ComputeTargetException, match="master 'mesos' is not valid"):
        HDInsightCompute.attach_configuration(
            address="head", username="u", password="p", master="mesos"
        )


@pytest.mark.parametrize(
    ("engine", "cls"),
    [(None, RemoteCompute), (SparkEngine(), HDInsightCompute), (SlurmEngine(), RemoteCompute)],
)
def test_an_attached_machine_is_listed_as_its_engines_class(
    engine: SparkEngine | SlurmEngine | None, cls: type[ComputeTarget]
) -> None:
    vm = m.VmRecord(
        name="x",
        vm=m.VmConfig(address="h", ssh=m.SshLogin(username="u", auth="password"), engine=engine),
        created_at=0.0,
    )
    assert _kind_of(vm) is cls
