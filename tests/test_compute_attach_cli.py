"""`sortie compute attach`'s command line, parsed in-process (no broker): the attach request
each ``--type`` gives (``VmConfig.engine``), and refusals that say what was wrong."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from sortie.cli.compute import _compute_request, engine_lines, machine_type
from sortie.cli.main import UsageError, _parser
from sortie.cli.output import ArgvError
from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine, SparkEngine
from sortie.scheduler.ssh.install import engine_args

LOGIN = ["--address", "login1", "--username", "u", "--password-env", "SORTIE_TEST_PW"]


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SORTIE_TEST_PW", "s3cret")


def attach(*flags: str) -> m.ComputeAttach:
    req = _compute_request(_parser().parse_args(["compute", "attach", "hpc", *LOGIN, *flags]))
    assert isinstance(req, m.ComputeAttach)
    return req


@pytest.mark.parametrize(
    ("flags", "engine"),
    [
        ([], None),
        (["--type", "machine"], None),
        (["--type", "vm"], None),
        (["--type", "slurm"], SlurmEngine()),
        (
            ["--type", "slurm", "--partition", "gpu", "--account", "ml-team", "--qos", "high"],
            SlurmEngine(partition="gpu", account="ml-team", qos="high"),
        ),
        (["--type", "spark"], SparkEngine()),
        (
            [
                "--type",
                "spark",
                "--master",
                "spark://head:7077",
                "--conf",
                "spark.executor.memory=4g",
                "--conf",
                "spark.executor.cores=2",
            ],
            SparkEngine(
                master="spark://head:7077",
                conf={"spark.executor.memory": "4g", "spark.executor.cores": "2"},
            ),
        ),
        (["--type", "spark", "--master", "yarn"], SparkEngine(master="yarn")),
        (
            ["--type", "spark", "--submit", "/opt/spark/bin/spark-submit", "--ui-port", "18080"],
            SparkEngine(submit="/opt/spark/bin/spark-submit", ui_port=18080),
        ),
    ],
)
def test_each_type_gives_its_engine(flags: list[str], engine: object) -> None:
    req = attach(*flags)
    assert req.vm.engine == engine
    assert req.vm.address == "login1"
    assert req.secret is not None and req.secret.password == "s3cret"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--partition", "gpu"], "--partition is for --type slurm; this attach is --type machine"),
        (["--partition", "gpu"], "add --type slurm to attach a slurm cluster"),
        (["--type", "spark", "--qos", "high"], "--qos is for --type slurm"),
        (["--type", "slurm", "--master", "yarn"], "--master is for --type spark"),
        (["--type", "vm", "--conf", "spark.a=b"], "--conf is for --type spark"),
        (["--type", "slurm", "--partition", "gpu;rm"], "--partition 'gpu;rm' is not a Slurm name"),
        (["--type", "spark", "--master", "mesos://x:5050"], "spark://HOST:PORT, yarn, or local"),
        (["--type", "spark", "--conf", "executor.memory=4g"], "are named spark.SOMETHING"),
        (["--type", "spark", "--conf", "spark.x"], "--conf takes KEY=VALUE"),
        (["--type", "slurm", "--ui-port", "80"], "--ui-port is for --type spark"),
        (["--type", "spark", "--submit", "spark-submit; rm -rf /"], "--submit"),
    ],
)
def test_wrong_combinations_are_refused_saying_what_to_do(flags: list[str], said: str) -> None:
    with pytest.raises(UsageError, match=None) as err:
        attach(*flags)
    assert said in str(err.value)


def test_a_wrong_flag_is_refused_before_a_password_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SORTIE_TEST_PW")
    with pytest.raises(UsageError, match="--partition is for --type slurm"):
        attach("--partition", "gpu")


def test_an_unknown_type_is_refused_by_the_parser() -> None:
    with pytest.raises(ArgvError, match="invalid choice: 'pbs'"):
        _parser().parse_args(["compute", "attach", "x", *LOGIN, "--type", "pbs"])


def test_the_private_key_file_works_as_for_a_machine(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("KEY TEXT")
    argv = ["compute", "attach", "hpc", "--address", "login1", "--username", "u"]
    argv += ["--private-key-file", str(key), "--type", "slurm", "--partition", "debug"]
    req = _compute_request(_parser().parse_args(argv))
    assert isinstance(req, m.ComputeAttach)
    assert req.secret is not None and req.secret.private_key == "KEY TEXT"
    assert req.vm.ssh.auth == "key" and req.vm.engine == SlurmEngine(partition="debug")


@pytest.mark.parametrize(
    "engine",
    [
        None,
        SlurmEngine(partition="gpu"),
        SparkEngine(master="spark://h:7077", conf={"spark.a": "b"}),
    ],
)
def test_the_remote_agent_is_told_its_engine(engine: SlurmEngine | SparkEngine | None) -> None:
    args = engine_args(engine)
    if engine is None:
        assert args == []
        return
    assert args[0] == "--engine"
    # what `sortie agent --engine JSON` reads back (sortie/cli/daemons.py engine_of)
    from sortie.cli.daemons import engine_of

    assert engine_of(args[1]) == engine
    assert json.loads(args[1])["engine"] in ("slurm", "spark")


@pytest.mark.parametrize(
    ("engine", "kind", "lines"),
    [
        (None, "vm", []),
        (
            SlurmEngine(partition="gpu"),
            "slurm",
            ["slurm: partition gpu, account (default), qos (default)"],
        ),
        (
            SparkEngine(conf={"spark.b": "2", "spark.a": "1"}),
            "spark",
            [
                "spark: master yarn",
                "spark: submit spark-submit",
                "spark: ui port 8080",
                "spark: --conf spark.a=1",
                "spark: --conf spark.b=2",
            ],
        ),
    ],
)
def test_how_a_target_is_listed(
    engine: SlurmEngine | SparkEngine | None, kind: str, lines: list[str]
) -> None:
    vm = msgspec.structs.replace(attach().vm, engine=engine)
    assert machine_type(vm) == kind
    assert engine_lines(engine) == lines
