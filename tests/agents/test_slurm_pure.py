"""The Slurm executor's pure parts: the sbatch command, the batch script, reading squeue,
scontrol and sinfo, and how a job's last state ends the attempt."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from sortie.agents.executors.sbatch import (
    JobEnd,
    JobFiles,
    batch_script,
    environment_file,
    job_end,
    job_gone_end,
    parse_exit_code,
    parse_job_id,
    parse_sinfo,
    parse_squeue,
    sbatch_argv,
    time_limit_minutes,
)
from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine
from sortie.proto.run_errors import ErrorKind

FILES = JobFiles(
    script=Path("/data/runs/r1/1.sbatch"),
    env=Path("/data/runs/r1/1.sbatch-env"),
    job_id=Path("/data/runs/r1/1.slurm-job"),
    output=Path("/data/runs/r1/1.slurm-out"),
    metrics=Path("/data/runs/r1/1.slurm-metrics"),
)


def _spec(**kw: object) -> m.RunSpec:
    base: dict[str, object] = {"experiment": "e", "script": "train.py", "snapshot_id": "s"}
    return m.RunSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_sbatch_argv_asks_for_the_runs_resources() -> None:
    spec = _spec(
        resources=m.Resources(cpus=2.5, memory_mb=4096, gpus=2),
        max_duration_s=61,
        node_count=2,
        processes_per_node=4,
    )
    argv = sbatch_argv(
        run_id="r1",
        spec=spec,
        engine=SlurmEngine(partition="gpu", account="ml", qos="high"),
        files=FILES,
        workdir=Path("/data/runs/r1/1"),
    )
    assert argv == [
        "sbatch",
        "--parsable",
        "--export=NONE",
        "--job-name=r1",
        "--output=/data/runs/r1/1.slurm-out",
        "--chdir=/data/runs/r1/1",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--cpus-per-task=3",
        "--mem=4096",
        "--gres=gpu:2",
        "--time=2",
        "--partition=gpu",
        "--account=ml",
        "--qos=high",
        "/data/runs/r1/1.sbatch",
    ]


def test_sbatch_argv_leaves_out_what_the_run_does_not_ask() -> None:
    argv = sbatch_argv(
        run_id="r1", spec=_spec(), engine=SlurmEngine(), files=FILES, workdir=Path("/w")
    )
    assert not [a for a in argv if a.startswith(("--mem", "--gres", "--time", "--partition"))]
    assert "--cpus-per-task=1" in argv


def test_a_gpu_type_goes_into_the_gres() -> None:
    spec = _spec(resources=m.Resources(gpus=1, gpu_type="a100"))
    argv = sbatch_argv(run_id="r", spec=spec, engine=SlurmEngine(), files=FILES, workdir=Path("/"))
    assert "--gres=gpu:a100:1" in argv


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(None, None), (1, 1), (60, 1), (60.5, 2), (3600, 60)]
)
def test_time_limit_is_whole_minutes_rounded_up(seconds: float | None, minutes: int | None) -> None:
    assert time_limit_minutes(seconds) == minutes


def test_the_batch_script_quotes_every_value_and_keeps_secrets_off_the_command() -> None:
    secret = "p'a$s `rm -rf /`\nline2"
    env = {"TOKEN": secret, "PATH": "/usr/bin:/bin", "bad name": "x"}
    exports = environment_file(env)
    assert f"export TOKEN={shlex.quote(secret)}" in exports
    assert "bad name" not in exports
    script = batch_script(["/env/python", "train.py", "--lr", "0.1 0.2"], Path("/j/1 env"))
    assert secret not in script and "TOKEN" not in script  # Slurm keeps a copy of the script
    assert ". '/j/1 env'" in script.splitlines()
    srun = next(line for line in script.splitlines() if line.startswith("exec srun"))
    assert "--export=ALL" in srun


def test_the_batch_script_gives_each_task_its_rank(tmp_path: Path) -> None:
    """Run the script with sh, ``srun`` and ``scontrol`` replaced by stand-ins that start
    two tasks the way Slurm does (each with its own SLURM_PROCID)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho node-a\necho node-b\n")
    (bin_dir / "srun").write_text(
        "#!/bin/sh\nshift\n"  # --export=ALL
        'for i in 0 1; do SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 "$@"; done\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MY": "it's $HOME"}
    env_file = tmp_path / "job env"
    env_file.write_text(environment_file(env))
    script = tmp_path / "job.sh"
    script.write_text(
        batch_script(
            ["sh", "-c", 'echo "$RANK/$WORLD_SIZE/$LOCAL_RANK/$NODE_RANK $MASTER_ADDR $MY"'],
            env_file,
        )
    )
    done = subprocess.run(
        ["sh", str(script)],
        env={"SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "node-[a-b]"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "0/2/0/0 node-a it's $HOME",
        "1/2/1/0 node-a it's $HOME",
    ]


@pytest.mark.parametrize(
    ("out", "job_id"), [("42\n", "42"), ("42;cluster\n", "42"), ("  7 \n", "7")]
)
def test_parse_job_id(out: str, job_id: str) -> None:
    assert parse_job_id(out) == job_id


@pytest.mark.parametrize("out", ["", "Submitted batch job 42", "error"])
def test_parse_job_id_refuses_what_is_not_an_id(out: str) -> None:
    with pytest.raises(ValueError, match="no job id"):
        parse_job_id(out)


@pytest.mark.parametrize(
    ("out", "seen"),
    [
        ("PENDING|JobHeldUser\n", ("PENDING", "JobHeldUser")),
        ("RUNNING|None\n", ("RUNNING", None)),
        ("COMPLETED|\n", ("COMPLETED", None)),
        ("PENDING|Resources", ("PENDING", "Resources")),
        ("", None),
        ("\n", None),
    ],
)
def test_parse_squeue(out: str, seen: tuple[str, str | None] | None) -> None:
    assert parse_squeue(out) == seen


@pytest.mark.parametrize(
    ("out", "code"),
    [
        ("JobId=5 JobName=r JobState=COMPLETED Reason=None ExitCode=0:0 RunTime=1", 0),
        ("JobId=5 JobState=FAILED ExitCode=3:0 DerivedExitCode=0:0", 3),
        ("JobId=5 JobState=CANCELLED ExitCode=0:15 Foo=1", -15),
        ("JobId=5 JobState=FAILED DerivedExitCode=9:0", None),
        ("", None),
    ],
)
def test_parse_exit_code(out: str, code: int | None) -> None:
    assert parse_exit_code(out) == code


@pytest.mark.parametrize(
    ("state", "exit_code", "stop_asked", "expected"),
    [
        ("COMPLETED", 0, False, JobEnd(exit_code=0)),
        ("COMPLETED", None, False, JobEnd(exit_code=0)),
        ("FAILED", 3, False, JobEnd(exit_code=3)),
        ("FAILED", -9, True, JobEnd(exit_code=-9)),
        ("TIMEOUT", -15, False, JobEnd(exit_code=-15, timed_out=True)),
        ("DEADLINE", None, False, JobEnd(exit_code=None, timed_out=True)),
        ("CANCELLED", -15, True, JobEnd(exit_code=-15, stopped=True)),
    ],
)
def test_how_a_job_ends_the_attempt(
    state: str, exit_code: int | None, stop_asked: bool, expected: JobEnd
) -> None:
    got = job_end(state, exit_code, stop_asked=stop_asked, job_id="7", reason=None)
    assert got == expected


@pytest.mark.parametrize(
    ("state", "kind", "words"),
    [
        ("OUT_OF_MEMORY", ErrorKind.EXIT_CODE, "ran out of memory"),
        ("CANCELLED", ErrorKind.CANCELED, "cancelled outside Sortie"),
        ("NODE_FAIL", ErrorKind.ENVIRONMENT, "a node of the cluster failed"),
        ("BOOT_FAIL", ErrorKind.ENVIRONMENT, "a node of the cluster failed"),
        ("PREEMPTED", ErrorKind.PREEMPTED, "will be requeued"),
        ("SPECIAL_EXIT", ErrorKind.ENVIRONMENT, "ended in state SPECIAL_EXIT"),
    ],
)
def test_when_slurm_decides_the_end_the_run_gets_its_error(
    state: str, kind: ErrorKind, words: str
) -> None:
    got = job_end(state, 1, stop_asked=False, job_id="7", reason="Prolog")
    assert got.error is not None
    assert got.error.kind == kind
    assert words in got.error.message and "7" in got.error.message
    assert got.exit_code == 1 and not got.stopped and not got.timed_out


def test_a_job_no_longer_listed() -> None:
    assert job_gone_end("7", 0, stop_asked=False) == JobEnd(exit_code=0)
    assert job_gone_end("7", None, stop_asked=True) == JobEnd(exit_code=None, stopped=True)
    gone = job_gone_end("7", None, stop_asked=False)
    assert gone.error is not None and "no longer knows job 7" in gone.error.message


@pytest.mark.parametrize(
    ("out", "largest"),
    [
        ("4|8000|(null)\n", (4, 8000, 0)),
        ("4|8000|(null)\n16|64000|gpu:4\n8|32000|gpu:a100:2(S:0-1)\n", (16, 64000, 4)),
        ("8|32000|gpu:a100:2(S:0),gpu:v100:1\n", (8, 32000, 3)),
        ("", None),
        ("garbage\n", None),
    ],
)
def test_parse_sinfo_takes_the_largest_node(out: str, largest: tuple[int, int, int] | None) -> None:
    assert parse_sinfo(out) == largest
