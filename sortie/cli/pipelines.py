"""`sortie pipeline submit|list|show|cancel|rerun`: pipelines from the command line.

`pipeline submit -f pipeline.yml` reads a pipeline file (``cli/pipeline_file.py``) and submits
it with the client's ``submit_pipeline`` (each step's source directory snapshotted and
uploaded; the scheduler checks the graph before anything is uploaded). The other commands
print ``client/pipeline_views.py``'s views: each step's state, its run or the run it reused,
which parts of its key changed or why it ran, why it was skipped or failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sortie.cli import output as out
from sortie.cli.common import UsageError, env_vars, with_client
from sortie.cli.runs import limit
from sortie.client.client import Client
from sortie.client.pipeline_views import (
    PipelineView,
    StepProgress,
    get_pipeline,
    list_pipelines,
    pipeline_summary_view,
    read_view,
    step_why,
)
from sortie.client.views import CancelView, SubmittedView
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState

if TYPE_CHECKING:
    from sortie.cli.jobfile import Located
    from sortie.cli.pipeline_file import PipelineFile


def add_pipeline(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `pipeline` command."""
    actions = sub.add_parser("pipeline").add_subparsers(
        dest="pipeline_command", required=True, metavar="ACTION"
    )
    s = actions.add_parser(
        "submit",
        help="submit a pipeline file",
        description="Submit the pipeline a pipeline file describes (docs/pipeline.schema.json). "
        "A step whose code, environment, arguments and inputs are unchanged since an earlier "
        "completed run is reused, not run again.",
    )
    s.add_argument(
        "-f", "--file", dest="pipeline_file", type=Path, required=True, metavar="PIPELINE.yml"
    )
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for a parameter the file declares (repeatable)",
    )
    s.add_argument(
        "--regenerate-outputs", action="store_true", help="run every step: reuse nothing"
    )
    s.add_argument("--experiment", help="the experiment (default: the file's)")
    s.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--wait", action="store_true", help="follow it; exit 0 only if Completed")
    lst = actions.add_parser("list", help="pipeline runs, newest first")
    lst.add_argument("--experiment")
    lst.add_argument("--limit", type=limit, metavar="N", help="the newest N only")
    show = actions.add_parser(
        "show", help="a pipeline run: each step's state, run, reuse, what changed"
    )
    cancel = actions.add_parser("cancel", help="cancel a pipeline run and its running steps")
    rerun = actions.add_parser(
        "rerun", help="submit a pipeline run again, reusing every step that completed"
    )
    rerun.add_argument("--wait", action="store_true", help="follow it; exit 0 only if Completed")
    for p in (show, cancel, rerun):
        p.add_argument("run_id", metavar="RUN")
    for p in (s, lst, show, cancel, rerun):
        out.add_output(p)


async def submit(client: Client, args: argparse.Namespace, pf: PipelineFile, where: Located) -> int:
    """Submit the (checked) pipeline file ``pf``."""
    from sortie.cli import pipeline_file as pfile
    from sortie.client.pipeline_submit import PipelineOptions, submit_pipeline

    options = PipelineOptions(
        experiment=args.experiment or pf.experiment,
        parameters=dict(pf.parameters),
        values=pfile.param_values(pf, args.param),
        regenerate_outputs=args.regenerate_outputs,
        tags={**{k: str(v) for k, v in pf.tags.items()}, **env_vars(args.tag, flag="--tag")},
        description=pf.description,
    )
    steps = pfile.step_configs(pf, where, args.pipeline_file.parent)
    sub = await submit_pipeline(client, pf.name, steps, options)
    for w in sub.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output != "text":
        out.emit(SubmittedView(run_id=sub.run_id, snapshot=sub.snapshot), args.output, indent=False)
    else:
        s = sub.snapshot
        print(
            f"Submitted pipeline {sub.run_id} ({pf.name}: {len(steps)} steps; uploaded "
            f"{s.uploaded_files} files, {out.size(s.uploaded_bytes)})",
            file=sys.stderr,
            flush=True,
        )
    return await _follow(client, sub.run_id, args) if args.wait else out.EXIT_OK


async def _follow(client: Client, run_id: str, args: argparse.Namespace) -> int:
    """`--wait`: a line as each step changes state (text), then the exit code."""
    rec = await client.wait(run_id, _progress_lines() if args.output == "text" else None)
    return out.EXIT_OK if rec.state == RunState.COMPLETED else out.EXIT_RUN_FAILED


def _progress_lines() -> Callable[[m.RunRecord], None]:
    progress = StepProgress()

    def seen(rec: m.RunRecord) -> None:
        for line in progress.lines(rec):
            print(line, flush=True)

    return seen


async def list_(client: Client, args: argparse.Namespace) -> int:
    found = await list_pipelines(client, args.experiment)
    if args.limit is not None:
        found = found[: args.limit]
    views = [pipeline_summary_view(r) for r in found]
    if args.output != "text":
        out.emit(views, args.output, indent=False)
        return out.EXIT_OK
    rows = [("PIPELINE RUN", "NAME", "EXPERIMENT", "STATE", "STEPS", "CREATED")]
    rows += [
        (
            v.run_id,
            v.name,
            v.experiment,
            str(v.state),
            ", ".join(f"{k} {n}" for k, n in v.steps_by_state.items()),
            v.created_at or "",
        )
        for v in views
    ]
    out.table(rows)
    if not views:
        print("no pipeline runs", file=sys.stderr)
    return out.EXIT_OK


def _show_text(view: PipelineView) -> None:
    rows: list[tuple[str, ...]] = [
        ("pipeline run", view.run_id),
        ("name", view.name),
        ("state", str(view.state)),
        ("experiment", view.experiment),
        ("created_at", view.created_at or ""),
        ("ended_at", view.ended_at or ""),
    ]
    rows += [("param", f"{k} = {v}") for k, v in view.parameters.items()]
    if view.regenerate_outputs:
        rows.append(("regenerate", "every step runs: nothing reused"))
    if view.rerun_of:
        rows.append(("rerun of", view.rerun_of))
    out.table(rows)
    print()
    steps: list[tuple[str, ...]] = [("STEP", "STATE", "RUN", "TARGET", "WHY")]
    steps += [(s.name, str(s.state), s.run_id or "", s.target, step_why(s)) for s in view.steps]
    out.table(steps)


async def show(client: Client, args: argparse.Namespace) -> int:
    view = await read_view(client, args.run_id)
    if args.output != "text":
        out.emit(view, args.output)
    else:
        _show_text(view)
    return out.EXIT_OK


async def cancel(client: Client, args: argparse.Namespace) -> int:
    await get_pipeline(client, args.run_id)  # refuse a run that is not a pipeline run
    reply = await client.cancel(args.run_id)
    if args.output != "text":
        out.emit(CancelView(run_id=reply.run_id, state=reply.state), args.output)
    elif reply.state in TERMINAL:
        print(f"Pipeline {reply.run_id}: {reply.state}")
    else:
        print(f"Pipeline {reply.run_id}: cancel sent; its running steps stop after their grace")
    return out.EXIT_OK


async def rerun(client: Client, args: argparse.Namespace) -> int:
    from sortie.client.pipeline_submit import rerun_pipeline

    await get_pipeline(client, args.run_id)
    run_id = await rerun_pipeline(client, args.run_id)
    if args.output != "text":
        out.emit({"run_id": run_id, "rerun_of": args.run_id}, args.output, indent=False)
    else:
        print(f"Submitted pipeline {run_id} (a rerun of {args.run_id})", file=sys.stderr)
    return await _follow(client, run_id, args) if args.wait else out.EXIT_OK


def run_pipeline(args: argparse.Namespace) -> int:
    """`sortie pipeline ACTION`: a pipeline file checked before connecting, then run."""
    return with_client(args, pipeline_action(args))


def pipeline_action(args: argparse.Namespace) -> Callable[[Client], Awaitable[int]]:
    """One `sortie pipeline` action, its file checked now (before connecting): its errors
    are the CLI's refusals (exit 2)."""
    if args.pipeline_command == "submit":
        from sortie.cli import pipeline_file as pfile

        if not args.pipeline_file.is_file():
            raise UsageError(f"pipeline file {args.pipeline_file} does not exist")
        pf, where = pfile.load(args.pipeline_file)
        pfile.param_values(pf, args.param)
        return lambda client: submit(client, args, pf, where)
    handlers = {"list": list_, "show": show, "cancel": cancel, "rerun": rerun}
    return lambda client: handlers[args.pipeline_command](client, args)
