"""The run page's "copy CLI command" and "resubmit": pure, a spec in, a command line (or a
new submission) out. Each command line is parsed back by `sortie run submit`'s own parser."""

from __future__ import annotations

import shlex

import msgspec
import pytest

from sortie.cli.main import _parser
from sortie.cli.submit import script_run_config as _script_run_config
from sortie.client.resubmit import resubmit_refusal, resubmit_spec
from sortie.client.submit_command import submit_command
from sortie.proto import messages as m
from sortie.proto.states import RunState

BASE = m.RunSpec(experiment="default", script="train.py", snapshot_id="ab" * 32)


def spec(**changes: object) -> m.RunSpec:
    return msgspec.structs.replace(BASE, **changes)


CASES = [
    ("defaults only", spec(), "sortie run submit . --script train.py"),
    (
        "experiment, target, arguments that look like flags",
        spec(experiment="digits", target="gpu-pool", arguments=["--lr", "0.1", "a b"]),
        "sortie run submit . --script train.py --experiment digits --target gpu-pool "
        "-- --lr 0.1 'a b'",
    ),
    (
        "user-managed interpreter",
        spec(
            environment=m.Environment(python=m.PythonEnvironment(interpreter="/opt/py/bin/python"))
        ),
        "sortie run submit . --script train.py --python /opt/py/bin/python",
    ),
    (
        "built environment from pip packages",
        spec(
            environment=m.Environment(
                python=m.PythonEnvironment(user_managed=False, pip=["numpy==2.0", "torch>=2"])
            )
        ),
        "sortie run submit . --script train.py --pip=numpy==2.0 '--pip=torch>=2'",
    ),
    (
        "docker",
        spec(
            environment=m.Environment(
                docker=m.DockerSection(
                    enabled=True,
                    base_image="img:1",
                    shm_size="2g",
                    gpu_support=True,
                    arguments=["--ipc=host"],
                )
            )
        ),
        "sortie run submit . --script train.py --docker-image img:1 --docker-shm-size 2g "
        "--docker-arg=--ipc=host --docker-gpus",
    ),
    (
        "variables, secrets by name, tags, constraints",
        spec(
            env_vars={"MODE": "fast x"},
            secret_env_names=["API_KEY"],
            tags={"team": "vision"},
            constraints={"zone": "a"},
        ),
        "sortie run submit . --script train.py '--env=MODE=fast x' --secret-env=API_KEY "
        "--constraint=zone=a --tag=team=vision",
    ),
    (
        "resources and limits",
        spec(
            resources=m.Resources(cpus=2.5, memory_mb=2048, gpus=1, gpu_type="H100"),
            node_count=2,
            max_duration_s=3600.0,
            queue_timeout_s=60.0,
            priority=5,
            max_retries=2,
            dedicated_only=True,
            strategy="spread",
        ),
        "sortie run submit . --script train.py --cpus 2.5 --memory-mb 2048 --gpus 1 "
        "--gpu-type H100 --node-count 2 --max-duration 3600 --queue-timeout 60 --priority 5 "
        "--max-retries 2 --dedicated-only --spread",
    ),
    (
        "a run-based creation names amlcompute again, not its deleted cluster",
        spec(
            target="run-abc123",
            amlcompute=m.AmlComputeSpec(
                vm_size="STANDARD_D2_V2", vm_priority="lowpriority", max_nodes=3
            ),
        ),
        "sortie run submit . --script train.py --target amlcompute --vm-size STANDARD_D2_V2 "
        "--vm-priority lowpriority --max-nodes 3",
    ),
]


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_command_line_of_a_spec(name: str, given: m.RunSpec, expected: str) -> None:
    assert submit_command(given).line == expected


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_command_line_parses_back_to_the_spec(
    name: str, given: m.RunSpec, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for secret in given.secret_env_names:
        monkeypatch.setenv(secret, "value")
    argv = shlex.split(expected)[1:]
    args, script_args = _parser().parse_known_args(argv)
    script_args = [a for a in script_args if a != "--"]
    config = _script_run_config(args, script_args)
    rc = config.run_config
    assert config.script == given.script
    assert [*config.arguments] == given.arguments
    assert args.experiment == given.experiment
    assert rc.environment_variables == given.env_vars
    assert sorted(rc.secret_environment_variables) == given.secret_env_names
    assert rc.cpus == given.resources.cpus and rc.gpus == given.resources.gpus
    assert rc.node_count == given.node_count and rc.max_retries == given.max_retries
    assert rc.environment.python.to_spec() == given.environment.python
    assert dict(rc.constraints) == given.constraints


def test_a_conda_environment_is_named_as_a_file_to_give() -> None:
    conda = m.PythonEnvironment(user_managed=False, conda=["numpy"], pip=["rich"])
    cmd = submit_command(spec(environment=m.Environment(python=conda)))
    assert "--conda-file environment.yml" in cmd.line
    assert cmd.notes and "numpy" in cmd.notes[0] and "rich" in cmd.notes[0]


def record(**changes: object) -> m.RunRecord:
    rec = m.RunRecord(
        run_id="r_1",
        spec=spec(submission_id="old"),
        state=RunState.COMPLETED,
        attempt=1,
        created_at=1.0,
    )
    return msgspec.structs.replace(rec, **changes)


def test_resubmit_keeps_the_snapshot_and_configuration_with_a_new_submission_id() -> None:
    rec = record(spec=spec(arguments=["--x", "1"], tags={"a": "b"}, submission_id="old"))
    again = resubmit_spec(rec, "new")
    assert again == msgspec.structs.replace(rec.spec, submission_id="new")


def test_resubmit_of_a_run_based_creation_asks_for_a_new_cluster() -> None:
    aml = m.AmlComputeSpec(vm_size="STANDARD_D2_V2")
    again = resubmit_spec(record(spec=spec(target="run-abc", amlcompute=aml)), "new")
    assert again.target == "amlcompute" and again.amlcompute == aml


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"spec": spec(secret_env_names=["API_KEY"])}, "resubmit it from the CLI"),
        ({"parent_id": "r_0"}, "resubmit its parent r_0"),
    ],
)
def test_what_cannot_be_resubmitted_from_the_record(changes: dict[str, object], said: str) -> None:
    why = resubmit_refusal(record(**changes))
    assert why is not None and said in why
    assert resubmit_refusal(record()) is None
