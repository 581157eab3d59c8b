"""The `sortie run submit` command line that submits a run like a stored one (the run
page's "copy CLI command"). Pure: a spec in, the arguments and what they cannot say out.

The source directory is not stored with a run (its snapshot is): the command names it
``source_dir``, by default ``.`` (run it from the project's folder). Secret variables are
passed by name (``--secret-env NAME``): their values come from the submitter's environment.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from sortie.client.resubmit import RUN_BASED, submitted_target
from sortie.proto import messages as m


@dataclass(frozen=True)
class SubmitCommand:
    argv: list[str]  # from "sortie"
    notes: list[str] = field(default_factory=list)  # what the command cannot reproduce

    @property
    def line(self) -> str:
        """The command as one shell line, quoted."""
        return shlex.join(self.argv)


def _num(value: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": as a person would type it."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _pairs(flag: str, values: dict[str, str]) -> list[str]:
    return [f"{flag}={k}={v}" for k, v in values.items()]


def _environment(env: m.Environment) -> tuple[list[str], list[str]]:
    py, docker = env.python, env.docker
    out: list[str] = []
    notes: list[str] = []
    if py.user_managed:
        if py.interpreter:
            out += ["--python", py.interpreter]
    elif py.conda or py.channels or py.python_version:
        out += ["--conda-file", "environment.yml"]
        notes.append(
            "the environment came from a conda file: give yours as --conda-file (conda "
            f"packages {', '.join(py.conda) or 'none'}; pip {', '.join(py.pip) or 'none'})"
        )
    else:
        for pkg in py.pip:
            out.append(f"--pip={pkg}")
    if docker.enabled and docker.base_image:
        out += ["--docker-image", docker.base_image]
        if docker.shm_size:
            out += ["--docker-shm-size", docker.shm_size]
        out += [f"--docker-arg={a}" for a in docker.arguments]
        if docker.gpu_support:
            out.append("--docker-gpus")
    return out, notes


def _resources(spec: m.RunSpec) -> list[str]:
    res = spec.resources
    out: list[str] = []
    if res.cpus != 1.0:
        out += ["--cpus", _num(res.cpus)]
    if res.memory_mb:
        out += ["--memory-mb", str(res.memory_mb)]
    if res.gpus:
        out += ["--gpus", str(res.gpus)]
    if res.gpu_type:
        out += ["--gpu-type", res.gpu_type]
    if spec.node_count != 1:
        out += ["--node-count", str(spec.node_count)]
    if spec.max_duration_s is not None:
        out += ["--max-duration", _num(spec.max_duration_s)]
    if spec.queue_timeout_s is not None:
        out += ["--queue-timeout", _num(spec.queue_timeout_s)]
    if spec.priority:
        out += ["--priority", str(spec.priority)]
    if spec.max_retries:
        out += ["--max-retries", str(spec.max_retries)]
    out += _pairs("--constraint", spec.constraints)
    if spec.dedicated_only:
        out.append("--dedicated-only")
    if spec.strategy == "spread":
        out.append("--spread")
    return out


def _target(spec: m.RunSpec) -> list[str]:
    target = submitted_target(spec)
    out = ["--target", target] if target != "local" else []
    aml = spec.amlcompute
    if target == RUN_BASED and aml is not None:
        out += ["--vm-size", aml.vm_size]
        if aml.vm_priority != "dedicated":
            out += ["--vm-priority", aml.vm_priority]
        if aml.max_nodes != 1:
            out += ["--max-nodes", str(aml.max_nodes)]
    return out


def submit_command(spec: m.RunSpec, source_dir: str = ".") -> SubmitCommand:
    """`sortie run submit` with the flags that give ``spec`` (defaults left out)."""
    argv = ["sortie", "run", "submit", source_dir, "--script", spec.script]
    if spec.experiment != "default":
        argv += ["--experiment", spec.experiment]
    argv += _target(spec)
    env_args, notes = _environment(spec.environment)
    argv += env_args
    argv += _pairs("--env", spec.env_vars)
    argv += [f"--secret-env={name}" for name in spec.secret_env_names]
    argv += _resources(spec)
    argv += _pairs("--tag", spec.tags)
    if spec.arguments:
        argv += ["--", *spec.arguments]
    return SubmitCommand(argv=argv, notes=notes)
