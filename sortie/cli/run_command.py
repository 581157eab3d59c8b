"""`sortie run ...`: the command line of the run commands. Submitting is in ``cli/submit.py``,
looking at runs in ``cli/runs.py`` and ``cli/run_list.py``; each is loaded when it is asked for."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sortie.cli.output import add_output
from sortie.cli.runs import add_list_filters

if TYPE_CHECKING:
    from sortie.client.client import Client

_Commands = argparse._SubParsersAction


async def run_run(client: Client, args: argparse.Namespace) -> int:
    """`sortie run SUBCOMMAND`, with the arguments after ``--`` (for `run submit` alone)."""
    if args.run_command == "submit":
        from sortie.cli.submit import submit

        return await submit(client, args, args.script_args)
    from sortie.cli.runs import HANDLERS

    return await HANDLERS[args.run_command](client, args, args.script_args)


def add_run(
    sub: _Commands[argparse.ArgumentParser], submit_defaults: dict[str, object] | None = None
) -> None:
    """`sortie run ...`: submit runs and inspect them."""
    run = sub.add_parser("run").add_subparsers(
        dest="run_command", required=True, metavar="SUBCOMMAND"
    )
    _add_run_submit(run, submit_defaults or {})

    lst = run.add_parser("list", help="runs, newest first")
    add_list_filters(lst)

    show = run.add_parser("show", help="one run's record")
    show.add_argument("run_id")

    logs = run.add_parser("logs", help="a run's output from the first line")
    logs.add_argument("run_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep going until it ends")
    logs.add_argument("--rank", type=int, help="only this node of a multi-node run")

    cancel = run.add_parser("cancel", help="stop a run")
    cancel.add_argument("run_id")

    wait = run.add_parser("wait", help="wait for a run to end; exit 0 only if Completed")
    wait.add_argument("run_id")

    why = run.add_parser("why", help="why a run is still queued")
    why.add_argument("run_id")

    dl = run.add_parser("download", help="fetch a run's artifacts (its outputs/) into DEST/RUN_ID/")
    dl.add_argument("run_id")
    dl.add_argument("dest", type=Path)
    dl.add_argument("--flat", action="store_true", help="into DEST itself (DEST/outputs/...)")
    for sp in (lst, show, logs, cancel, wait, why, dl):
        add_output(sp)


def _add_run_submit(run: _Commands[argparse.ArgumentParser], defaults: dict[str, object]) -> None:
    """`sortie run submit`: what to run, in which environment, with which resources."""
    s = run.add_parser(
        "submit",
        help="snapshot a directory and run a script from it",
        description="Arguments for the script go after --arg (repeatable) or after `--`. "
        "With -f JOB.yml the run is described by a job file (docs/jobfile.schema.json); "
        "flags given as well override it (repeatable ones add to its lists).",
    )
    submit_options(s)
    s.set_defaults(**defaults)


def submit_options(s: argparse.ArgumentParser) -> None:
    """What `sortie run submit` and `sortie sweep submit` take: the run (a sweep's trials)."""
    s.add_argument("source_dir", type=Path, nargs="?", help="the folder to snapshot")
    s.add_argument("-f", "--file", dest="job_file", type=Path, metavar="JOB.yml", help="a job file")
    s.add_argument("--script", help="path of the script inside SOURCE_DIR")
    s.add_argument("--arg", action="append", default=[], dest="args", metavar="X")
    s.add_argument("--target", default="local")
    s.add_argument("--experiment", default="default")
    _submit_environment_options(s)
    _submit_resource_options(s)
    s.add_argument("--wait", action="store_true", help="stream output; exit 0 only if Completed")
    add_output(s)


def _submit_environment_options(s: argparse.ArgumentParser) -> None:
    """The run's Python environment, container and environment variables."""
    env = s.add_mutually_exclusive_group()
    env.add_argument("--python", help="use this interpreter as is (user-managed)")
    env.add_argument(
        "--pip",
        action="append",
        metavar="PKG",
        help="build an environment with this package (repeatable: --pip numpy --pip torch)",
    )
    env.add_argument("--requirements", type=Path, metavar="FILE")
    env.add_argument("--conda-file", type=Path, metavar="FILE")
    s.add_argument("--docker-image", metavar="IMAGE", help="run in a container from IMAGE")
    s.add_argument("--docker-shm-size", metavar="SIZE", help="the container's /dev/shm, e.g. 2g")
    s.add_argument(
        "--docker-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra docker-run option: --ipc=host, --cap-add=X, --ulimit=..., "
        "--env=K=V (repeatable; write it as --docker-arg=--ipc=host)",
    )
    s.add_argument(
        "--docker-gpus",
        action="store_true",
        help="pass the run's GPUs into the container (device requests)",
    )
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass $NAME from your environment to the run as a secret: its value is never "
        "stored in the run's record, shown or logged (values are never taken from the "
        "command line)",
    )


def _submit_resource_options(s: argparse.ArgumentParser) -> None:
    """What the run needs (time, CPUs, memory, GPUs, nodes), retries and placement hints."""
    s.add_argument("--max-duration", type=float, metavar="SECONDS")
    s.add_argument("--priority", type=int, default=0)
    s.add_argument("--cpus", type=float, default=1.0)
    mem = s.add_mutually_exclusive_group()
    mem.add_argument("--memory", type=float, metavar="GB", help="memory the run needs, in GB")
    mem.add_argument("--memory-mb", type=int)
    s.add_argument("--gpus", type=int, default=0)
    s.add_argument("--gpu-type", help="e.g. H100: matched within the agent's GPU name")
    s.add_argument("--node-count", type=int, default=1)
    s.add_argument(
        "--processes-per-node",
        type=int,
        default=1,
        metavar="N",
        help="ranks started on each node (Slurm targets only; elsewhere start them from the "
        "script, e.g. torchrun)",
    )
    s.add_argument("--max-retries", type=int, default=0, help="re-runs after a failure")
    s.add_argument(
        "--submission-id",
        metavar="ID",
        help="your id for this submission: submitting again with it gives the same run "
        "(safe retries from scripts)",
    )
    s.add_argument("--constraint", action="append", default=[], metavar="LABEL=VALUE")
    s.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag of the run"
    )
    s.add_argument("--dedicated-only", action="store_true", help="never on low-priority nodes")
    s.add_argument("--spread", action="store_true", help="prefer the emptiest agent")
    s.add_argument("--snapshot-limit-mb", type=float, default=None)
    s.add_argument(
        "--queue-timeout",
        type=float,
        metavar="SECONDS",
        help="fail the run (queue_timeout) if it is still queued after this long",
    )
    _submit_run_based_options(s)


def _submit_run_based_options(s: argparse.ArgumentParser) -> None:
    """--target amlcompute: a temporary cluster made for the run, deleted when it ends."""
    s.add_argument(
        "--vm-size",
        metavar="SIZE",
        help="with --target amlcompute: the size of the run's temporary cluster's nodes",
    )
    s.add_argument("--vm-priority", choices=("dedicated", "lowpriority"), default="dedicated")
    s.add_argument(
        "--max-nodes",
        type=int,
        default=1,
        metavar="N",
        help="with --target amlcompute: the temporary cluster's max nodes (default 1)",
    )
