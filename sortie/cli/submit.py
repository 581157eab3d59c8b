"""`sortie run submit`: the flags as the SDK's run configuration, the submit, and (with
``--wait``) the run's output until it ends."""

from __future__ import annotations

import argparse
import os
import sys

from sortie.cli.common import UsageError, env_vars
from sortie.cli.output import EXIT_OK, EXIT_RUN_FAILED, emit
from sortie.cli.output import size as _size
from sortie.cli.runs import print_outcome
from sortie.client.client import Client, echo_line
from sortie.client.runconfig import (
    AmlComputeSection,
    DockerSettings,
    EnvironmentSection,
    PythonSection,
    RunConfiguration,
    ScriptRunConfig,
)
from sortie.client.views import SubmittedView


def script_run_config(args: argparse.Namespace, script_args: list[str]) -> ScriptRunConfig:
    """`sortie run submit`'s flags as the SDK's configuration, so that both reach the
    scheduler through the one conversion (``runconfig.run_spec``)."""
    if not args.docker_image and (args.docker_shm_size or args.docker_arg or args.docker_gpus):
        raise UsageError("--docker-shm-size, --docker-arg and --docker-gpus need --docker-image")
    if args.vm_size and args.target != "amlcompute":
        raise UsageError(
            "--vm-size makes a temporary cluster for the run: use it with --target amlcompute"
        )
    docker = DockerSettings(
        enabled=bool(args.docker_image),
        base_image=args.docker_image or None,
        gpu_support=args.docker_gpus,
        shm_size=args.docker_shm_size,
        arguments=list(args.docker_arg),
    )
    run_config = RunConfiguration(
        target=args.target,
        environment=EnvironmentSection(python=_python_section(args), docker=docker),
        environment_variables=env_vars(args.env),
        secret_environment_variables=secret_env(args.secret_env),
        max_run_duration_seconds=args.max_duration,
        priority=args.priority,
        cpus=args.cpus,
        memory_mb=int(args.memory * 1024) if args.memory is not None else args.memory_mb or 0,
        gpus=args.gpus,
        gpu_type=args.gpu_type,
        node_count=args.node_count,
        processes_per_node=args.processes_per_node,
        max_retries=args.max_retries,
        constraints=env_vars(args.constraint, flag="--constraint"),
        dedicated_only=args.dedicated_only,
        strategy="spread" if args.spread else "binpack",
        queue_timeout_seconds=args.queue_timeout,
        amlcompute=AmlComputeSection(
            vm_size=args.vm_size,
            vm_priority=args.vm_priority,
            _cluster_max_node_count=args.max_nodes,
        ),
    )
    return ScriptRunConfig(
        source_directory=args.source_dir,
        script=args.script,
        arguments=[*args.args, *script_args],
        run_config=run_config,
    )


def _python_section(args: argparse.Namespace) -> PythonSection:
    """--pip, --requirements, --conda-file (Sortie builds it) or --python (used as is)."""
    if args.pip:
        return PythonSection(user_managed_dependencies=False, pip_packages=list(args.pip))
    if args.requirements:
        return PythonSection(
            user_managed_dependencies=False, requirements_file=str(args.requirements)
        )
    if args.conda_file:
        return PythonSection(
            user_managed_dependencies=False, conda_dependencies_file=str(args.conda_file)
        )
    return PythonSection(interpreter_path=args.python)


def secret_env(names: list[str]) -> dict[str, str]:
    """``--secret-env NAME``: the value of $NAME in the submitter's own environment."""
    out: dict[str, str] = {}
    for name in names:
        if "=" in name:
            raise UsageError(
                f"--secret-env takes a variable NAME, not NAME=VALUE ({name.partition('=')[0]}"
                "=...): set the variable in your environment and pass its name; secret "
                "values are never taken from the command line"
            )
        value = os.environ.get(name)
        if value is None:
            raise UsageError(
                f"--secret-env {name}: ${name} is not set in your environment; set it (e.g. "
                f"read -s {name} && export {name}) and submit again"
            )
        out[name] = value
    return out


def run_config_of(args: argparse.Namespace, script_args: list[str]) -> ScriptRunConfig:
    """The submit flags as the SDK's configuration, the source directory checked first."""
    source = args.source_dir
    if source is None or not args.script:
        raise UsageError(
            "give SOURCE_DIR and --script (or `script:` in a job file: -f JOB.yml)"
            if source is None
            else "--script is required: the script's path inside SOURCE_DIR (or `script:` "
            "in a job file)"
        )
    if not source.exists():
        raise UsageError(f"source directory {source} does not exist")
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory: give the folder that holds your script")
    return script_run_config(args, script_args)


async def submit(client: Client, args: argparse.Namespace, script_args: list[str]) -> int:
    config = run_config_of(args, script_args)
    limit_mb = args.snapshot_limit_mb
    from sortie.cli.progress import SubmitProgress, interactive

    with SubmitProgress(enabled=interactive(args.output)) as bars:
        sub = await client.submit(
            config,
            experiment=args.experiment,
            submission_id=args.submission_id,
            tags=env_vars(args.tag, flag="--tag") or None,
            snapshot_limit_bytes=int(limit_mb * 1024 * 1024) if limit_mb else None,
            progress=bars.uploading,
            hash_progress=bars.hashing,
        )
    for w in sub.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output != "text":
        emit(SubmittedView(run_id=sub.run_id, snapshot=sub.snapshot), args.output, indent=False)
    else:
        s = sub.snapshot
        target = args.target
        if target == "amlcompute":  # run-based creation: name the cluster made for the run
            target = f"{(await client.get_run(sub.run_id)).spec.target} (made for this run)"
        print(
            f"Submitted {sub.run_id} to {target} "
            f"(snapshot {s.files} files, {_size(s.bytes)}; uploaded {s.uploaded_files} files, "
            f"{_size(s.uploaded_bytes)})",
            file=sys.stderr,
            flush=True,
        )
    if not args.wait:
        return EXIT_OK
    return await _stream_and_wait(client, sub.run_id, fmt=args.output)


async def _stream_and_wait(client: Client, run_id: str, *, fmt: str = "text") -> int:
    quiet = fmt != "text"
    from sortie.cli.progress import interactive, run_state_line

    ranked = (await client.get_run(run_id)).spec.node_count > 1
    # on a terminal, a live line under the output says where the run is (Queued, Preparing...)
    async with run_state_line(client, run_id, enabled=not quiet and interactive()):
        async for rank, line in client.logs(run_id, follow=True):
            if not quiet:
                echo_line(line, rank if ranked else None)
        rec = await client.wait(run_id)
    print_outcome(rec, fmt)
    return EXIT_OK if rec.state == "Completed" else EXIT_RUN_FAILED
