"""What the Slurm executor says to Slurm and how it reads the answers; pure.

:func:`batch_script` is the job's script: it reads the run's environment from a file of
its own (:func:`environment_file`; values may be secrets: that file is the owner's alone, and
nothing of it goes on a command line or into the script Slurm keeps), finds rank 0's host,
and starts one task per rank with ``srun``; each task sets its own ``RANK``,
``LOCAL_RANK``, ``NODE_RANK`` and ``WORLD_SIZE`` from Slurm's variables (escaped from the
batch shell). :func:`sbatch_argv` asks for the run's resources. :func:`parse_squeue`,
:func:`parse_exit_code` and :func:`job_end` read ``squeue``/``scontrol`` and decide how the
attempt ended (:class:`JobEnd`).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine
from sortie.proto.run_errors import ErrorKind

# Slurm's states in which a job has ended (it will not run, or run again, by itself)
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "PREEMPTED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXIT_CODE = re.compile(r"(?:^|\s)ExitCode=(\d+):(\d+)(?:\s|$)")
# set in each task (escaped from the batch shell: single quotes) from Slurm's own variables
TASK_PRELUDE = (
    'export RANK="$SLURM_PROCID" WORLD_SIZE="$SLURM_NTASKS" LOCAL_RANK="$SLURM_LOCALID" '
    'NODE_RANK="$SLURM_NODEID"; exec "$@"'
)


@dataclass(frozen=True, kw_only=True)
class JobFiles:
    """Where one attempt's Slurm files lie (in the shared job directory)."""

    script: Path  # the batch script (it names env, holds no value)
    env: Path  # the run's environment as export lines (0600: values may be secrets)
    output: Path  # the job's stdout and stderr, tailed to the run's log
    metrics: Path  # the plain file the run writes metric lines to (SORTIE_METRICS_FILE)
    job_id: Path  # the job's id while it may run: a restarted agent cancels what it finds


def time_limit_minutes(max_duration_s: float | None) -> int | None:
    """Slurm's ``--time`` for a max duration: whole minutes, rounded up (at least one)."""
    if max_duration_s is None:
        return None
    return max(1, math.ceil(max_duration_s / 60))


def sbatch_argv(
    *,
    run_id: str,
    spec: m.RunSpec,
    engine: SlurmEngine,
    files: JobFiles,
    workdir: Path,
) -> list[str]:
    """The ``sbatch`` command that submits the attempt's batch script (no environment
    values on it: ``--export=NONE``, the script sets them)."""
    res = spec.resources
    argv = [
        "sbatch",
        "--parsable",
        "--export=NONE",
        f"--job-name={run_id}",
        f"--output={files.output}",
        f"--chdir={workdir}",
        f"--nodes={spec.node_count}",
        f"--ntasks-per-node={spec.processes_per_node}",
        f"--cpus-per-task={max(1, math.ceil(res.cpus))}",
    ]
    if res.memory_mb > 0:
        argv.append(f"--mem={res.memory_mb}")
    if res.gpus > 0:
        gres = f"gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type else f"gpu:{res.gpus}"
        argv.append(f"--gres={gres}")
    if (minutes := time_limit_minutes(spec.max_duration_s)) is not None:
        argv.append(f"--time={minutes}")
    for flag, value in (
        ("--partition", engine.partition),
        ("--account", engine.account),
        ("--qos", engine.qos),
    ):
        if value is not None:
            argv.append(f"{flag}={value}")
    argv.append(str(files.script))
    return argv


def environment_file(env: dict[str, str]) -> str:
    """The run's variables as shell ``export`` lines, every value quoted. The file is the
    owner's alone (0600) and the batch script only names it, so the values never reach a
    command line or the copy of the batch script slurmctld keeps in its state directory."""
    lines = ["# written by the Sortie agent: the run's environment (secret: 0600)"]
    for name, value in sorted(env.items()):
        if not _ENV_NAME.match(name):
            continue  # not a name a shell can export (the process executor passes it; sh cannot)
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def batch_script(argv: list[str], env_file: Path) -> str:
    """The job's batch script: the run's variables read from ``env_file`` (see
    :func:`environment_file`), rank 0's host as ``MASTER_ADDR``, then one task per rank
    running ``argv``."""
    lines = [
        "#!/bin/sh",
        "# written by the Sortie agent: the run's environment, then its tasks",
        f". {shlex.quote(str(env_file))}",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"; '
        "export MASTER_ADDR",
    ]
    task = shlex.join(argv)
    lines.append(f"exec srun --export=ALL sh -c {shlex.quote(TASK_PRELUDE)} sortie-task {task}")
    return "\n".join(lines) + "\n"


def parse_job_id(out: str) -> str:
    """The job id ``sbatch --parsable`` answers (``ID`` or ``ID;CLUSTER``); ValueError if none."""
    first = out.strip().splitlines()[0] if out.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch answered no job id: {out.strip()[:200]!r}")
    return job_id


def parse_squeue(out: str) -> tuple[str, str | None] | None:
    """``squeue -h -t all -j ID -o '%T|%r'``: (state, reason), or None when the job is not
    listed (unknown, or ended longer ago than ``MinJobAge``). ``None`` reason: Slurm's
    "None"."""
    for line in out.splitlines():
        if not line.strip():
            continue
        state, _, reason = line.strip().partition("|")
        reason = reason.strip()
        return state.strip(), (None if reason in ("", "None", "(null)") else reason)
    return None


def parse_exit_code(out: str) -> int | None:
    """The exit code in ``scontrol show job -o ID``: ``ExitCode=code:signal`` gives ``-signal``
    when a signal ended it, else ``code``; None when not found."""
    match = _EXIT_CODE.search(out)
    if match is None:
        return None
    code, sig = int(match.group(1)), int(match.group(2))
    return -sig if sig else code


@dataclass(frozen=True, kw_only=True)
class JobEnd:
    """How an ended Slurm job ends the attempt."""

    exit_code: int | None
    timed_out: bool = False
    stopped: bool = False  # ended by the executor's own stop
    error: m.RunError | None = None  # the engine's word when it, not the script, decided


def job_end(
    state: str, exit_code: int | None, *, stop_asked: bool, job_id: str, reason: str | None
) -> JobEnd:
    """The attempt's end from the job's last state (pure; see the table in the tests)."""
    if state == "COMPLETED":
        return JobEnd(exit_code=0 if exit_code is None else exit_code)
    if state in ("TIMEOUT", "DEADLINE"):
        return JobEnd(exit_code=exit_code, timed_out=True)
    if state == "CANCELLED" and stop_asked:
        return JobEnd(exit_code=exit_code, stopped=True)
    return JobEnd(exit_code=exit_code, error=engine_error(state, job_id, reason))


def engine_error(state: str, job_id: str, reason: str | None) -> m.RunError | None:
    """The run's error when Slurm, not the script, decided how the job ended (None: the
    exit code says it all)."""
    why = f" ({reason})" if reason else ""
    match state:
        case "FAILED":
            return None
        case "OUT_OF_MEMORY":
            kind, message = (
                ErrorKind.EXIT_CODE,
                f"Slurm job {job_id} ran out of memory (its --mem): ask for more memory_mb "
                "in the run's resources",
            )
        case "CANCELLED":
            kind, message = (
                ErrorKind.CANCELED,
                f"Slurm job {job_id} was cancelled outside Sortie{why} (scancel by a user or "
                "an administrator)",
            )
        case "NODE_FAIL" | "BOOT_FAIL":
            kind, message = (
                ErrorKind.ENVIRONMENT,
                f"Slurm job {job_id} ended {state}{why}: a node of the cluster failed; the run "
                "may be retried",
            )
        case "PREEMPTED":
            kind, message = (
                ErrorKind.PREEMPTED,
                f"Slurm preempted job {job_id}; the run will be requeued",
            )
        case _:
            kind, message = (
                ErrorKind.ENVIRONMENT,
                f"Slurm job {job_id} ended in state {state}{why}",
            )
    return m.RunError(kind=kind, message=message)


def job_gone_end(job_id: str, exit_code: int | None, *, stop_asked: bool) -> JobEnd:
    """A job squeue no longer lists (ended before MinJobAge ran out between two polls, or
    removed): the exit code scontrol gave, if any."""
    if stop_asked:
        return JobEnd(exit_code=exit_code, stopped=True)
    if exit_code is not None:
        return JobEnd(exit_code=exit_code)
    return JobEnd(
        exit_code=None,
        error=m.RunError(
            kind=ErrorKind.ENVIRONMENT,
            message=f"Slurm no longer knows job {job_id}: its end was not seen",
        ),
    )


def parse_sinfo(out: str) -> tuple[int, int, int] | None:
    """The largest node in ``sinfo -h -N -o '%c|%m|%G'``: (cpus, memory MB, GPUs), by CPUs
    then memory; None when no node is listed. ``%G`` is e.g. ``gpu:4``, ``gpu:a100:2(S:0)``
    or ``(null)``."""
    best: tuple[int, int, int] | None = None
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        try:
            cpus = int(parts[0].rstrip("+"))
            memory = int(parts[1].rstrip("+"))
        except ValueError:
            continue
        node = (cpus, memory, _gpus_of(parts[2]))
        if best is None or node > best:
            best = node
    return best


def _gpus_of(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        fields = item.split("(", 1)[0].split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        count = fields[-1]
        if count.isdigit():
            total += int(count)
    return total
