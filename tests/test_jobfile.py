"""Job files (`sortie run submit -f job.yml`): the same ``ScriptRunConfig`` as the flags, flags
override the file, paths relative to the file, errors that name file, line and field, and the
committed JSON Schema generated from the one definition.

These parse the command line in-process (``_parser``), as tests/client/test_runconfig.py does;
the CLI itself runs as a child process in tests/e2e/test_cli_output_e2e.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sortie.cli.jobfile import JobFileError, load, schema
from sortie.cli.main import _parser, _with_job_file
from sortie.cli.submit import script_run_config as _script_run_config
from sortie.client.runconfig import ScriptRunConfig

EVERYTHING = """\
source_directory: src
script: train.py
arguments: [--lr, 0.5, 3]
target: gpu
experiment: digits
environment:
  python:
    pip_packages: [numpy, "torch>=2,<3"]
  docker:
    enabled: true
    base_image: python:3.11
    gpu_support: true
    shm_size: 2g
    arguments: [--ipc=host]
resources:
  cpus: 2
  memory: 1.5
  gpus: 1
  gpu_type: H100
node_count: 2
priority: 3
environment_variables: {A: "1", THREADS: 4}
secret_environment_variables: [TOKEN]
max_run_duration_seconds: 60
max_retries: 4
constraints: {zone: a}
dedicated_only: true
strategy: spread
queue_timeout_seconds: 600
"""

FLAGS = [
    "run",
    "submit",
    "{dir}/src",
    "--script",
    "train.py",
    "--arg=--lr",
    "--arg",
    "0.5",
    "--arg",
    "3",
    "--target",
    "gpu",
    "--experiment",
    "digits",
    "--pip",
    "numpy",
    "--pip",
    "torch>=2,<3",
    "--docker-image",
    "python:3.11",
    "--docker-gpus",
    "--docker-shm-size",
    "2g",
    "--docker-arg=--ipc=host",
    "--cpus",
    "2",
    "--memory",
    "1.5",
    "--gpus",
    "1",
    "--gpu-type",
    "H100",
    "--node-count",
    "2",
    "--priority",
    "3",
    "--env",
    "A=1",
    "--env",
    "THREADS=4",
    "--secret-env",
    "TOKEN",
    "--max-duration",
    "60",
    "--max-retries",
    "4",
    "--constraint",
    "zone=a",
    "--dedicated-only",
    "--spread",
    "--queue-timeout",
    "600",
]


def parsed(*argv: str) -> argparse.Namespace:
    return _with_job_file(_parser().parse_args(list(argv)), list(argv))


def config_of(*argv: str) -> ScriptRunConfig:
    return _script_run_config(parsed(*argv), [])


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")


def write(tmp_path: Path, text: str, name: str = "job.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_job_file_builds_the_config_its_flags_build(tmp_path: Path) -> None:
    job = write(tmp_path, EVERYTHING)
    from_file = config_of("run", "submit", "-f", str(job))
    from_flags = config_of(*(a.format(dir=tmp_path) for a in FLAGS))
    assert from_file == from_flags
    assert from_file.run_config.environment.python.pip_packages == ["numpy", "torch>=2,<3"]
    assert from_file.run_config.environment_variables == {"A": "1", "THREADS": "4"}


def test_a_run_based_cluster_in_a_job_file(tmp_path: Path) -> None:
    job = write(
        tmp_path,
        "script: train.py\ntarget: amlcompute\n"
        "amlcompute: {vm_size: STANDARD_D2_V2, vm_priority: lowpriority, max_nodes: 2}\n",
    )
    from_file = config_of("run", "submit", "-f", str(job))
    from_flags = config_of(
        "run", "submit", str(tmp_path), "--script", "train.py", "--target", "amlcompute",
        "--vm-size", "STANDARD_D2_V2", "--vm-priority", "lowpriority", "--max-nodes", "2",
    )  # fmt: skip
    assert from_file == from_flags
    section = from_file.run_config.amlcompute
    assert (section.vm_size, section._cluster_max_node_count) == ("STANDARD_D2_V2", 2)


def test_flags_override_the_file_and_add_to_its_lists(tmp_path: Path) -> None:
    job = write(tmp_path, EVERYTHING)
    config = config_of(
        "run", "submit", "-f", str(job), "--target", "cpu", "--python", "/usr/bin/python3",
        "--memory-mb", "256", "--env", "B=2", "--cpus", "4",
    )  # fmt: skip
    rc = config.run_config
    assert (rc.target, rc.cpus, rc.memory_mb) == ("cpu", 4.0, 256)
    # a Python flag replaces the file's whole choice of environment
    python = rc.environment.python
    assert (python.interpreter_path, python.pip_packages) == ("/usr/bin/python3", [])
    assert rc.environment_variables == {"A": "1", "THREADS": "4", "B": "2"}
    assert rc.node_count == 2 and rc.strategy == "spread"  # the rest from the file


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "requirements.txt").write_text("numpy\n")
    job = write(
        folder,
        "script: train.py\nsource_directory: ../code\n"
        "environment:\n  python:\n    requirements_file: requirements.txt\n",
    )
    args = parsed("run", "submit", "--file", str(job))
    assert args.source_dir == folder / "../code"
    config = _script_run_config(args, [])
    assert config.run_config.environment.python.requirements_file == str(
        folder / "requirements.txt"
    )
    # a SOURCE_DIR on the command line wins, relative to where the command runs
    assert parsed("run", "submit", "-f", str(job), "elsewhere").source_dir == Path("elsewhere")


def test_a_file_with_only_a_script_keeps_the_flag_defaults(tmp_path: Path) -> None:
    job = write(tmp_path, "script: train.py\n")
    assert config_of("run", "submit", "-f", str(job)) == config_of(
        "run", "submit", str(tmp_path), "--script", "train.py"
    )


BAD = [
    (
        "script: t.py\nresources:\n  cpus: 2\n  gpus: two\n",
        "job.yml:4: resources.gpus: expected an integer, got 'two'",
    ),
    (
        "script: t.py\nresources:\n  gpu: 1\n",
        "job.yml:3: resources.gpu: unknown key; did you mean gpus?",
    ),
    (
        "script: t.py\nenviroment: {}\n",
        "job.yml:2: enviroment: unknown key; did you mean environment",
    ),
    (
        "script: t.py\nstrategy: pack\n",
        "job.yml:2: strategy: expected one of 'binpack', 'spread', got 'pack'",
    ),
    (
        "script: t.py\narguments: [a, true]\n",
        "job.yml:2: arguments[1]: expected a number or a string, got true",
    ),
    ("script: t.py\nnode_count: 0\n", "job.yml:2: node_count: expected an integer >= 1"),
    ("script: [t.py\n", "job.yml:2: not valid YAML"),
    ("- script: t.py\n", "job.yml:1: a job file is a mapping of settings"),
    (
        "script: t.py\nenvironment:\n  python:\n    pip_packages: [a]\n"
        "    requirements_file: r.txt\n",
        "job.yml:3: environment.python: give one of pip_packages or requirements_file, not both",
    ),
    (
        "script: t.py\nenvironment:\n  docker:\n    enabled: true\n",
        "job.yml:3: environment.docker: enabled: true needs base_image",
    ),
    (
        "script: t.py\nresources: {memory: 1, memory_mb: 512}\n",
        "job.yml:2: resources: give memory (GB) or memory_mb, not both",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_errors_name_the_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    job = write(tmp_path, text)
    with pytest.raises(JobFileError) as err:
        load(job)
    assert str(err.value).startswith(str(tmp_path / expected)), str(err.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"cannot read the job file .*nope\.yml"):
        load(tmp_path / "nope.yml")


def test_jobfile_schema_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "jobfile.schema.json"
    regenerate = "regenerate: python -m sortie.cli.jobfile > docs/jobfile.schema.json"
    assert doc.read_text() == schema(), regenerate
