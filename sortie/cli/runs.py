"""`sortie run list|show|logs|cancel|wait|download|why`: looking at runs, and following one.

Each handler prints in the command's ``--output`` format (``cli/output.py``): tables for
people, the views of ``client/views.py`` for programs.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sortie.cli import output as out
from sortie.cli import run_list
from sortie.client.client import Client, echo_line
from sortie.client.views import (
    CancelView,
    DownloadView,
    log_line_view,
    outcome_view,
    run_view,
)
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.waiting import describe, describe_engine_job, engine_wait

_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``30m``, ``2h``, ``7d``) or an ISO 8601 time
    (``2026-12-01T09:00:00Z``; without a zone: UTC), as epoch seconds."""
    if match := _DURATION.match(text.strip()):
        back = float(match["n"]) * _SECONDS[match["unit"]]
        return (time.time() if now is None else now) - back
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time "
            "(2026-12-01T09:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def limit(text: str) -> int:
    """``--limit``: a positive count."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--limit takes a count of 1 or more (got {text!r})")
    return n


def add_list_filters(lst: argparse.ArgumentParser) -> None:
    """`sortie run list`'s filters; all given must hold."""
    lst.add_argument("--experiment")
    lst.add_argument(
        "--state",
        action="append",
        choices=[str(s) for s in RunState],
        metavar="STATE",
        help="only runs in this state (repeatable: any of them): "
        + ", ".join(str(s) for s in RunState),
    )
    lst.add_argument("--target", help="only runs submitted to this compute target")
    lst.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only runs created since WHEN: a duration back from now (30m, 2h, 7d) or an "
        "ISO 8601 time",
    )
    lst.add_argument(
        "--tag",
        action="append",
        type=tag_filter,
        metavar="KEY[=VALUE]",
        help="only runs with this tag (with this value, when given); repeatable: all of them",
    )
    lst.add_argument("--search", metavar="TEXT", help="only runs whose id contains TEXT")
    lst.add_argument("--limit", type=limit, metavar="N", help="the newest N runs only")


def tag_filter(text: str) -> tuple[str, str | None]:
    """``--tag KEY`` (the run has the tag) or ``--tag KEY=VALUE`` (with that value)."""
    key, eq, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"--tag takes KEY or KEY=VALUE (got {text!r})")
    return key, value if eq else None


async def show(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    rec = await client.get_run(args.run_id)
    kids = [c.run_id for c in await client.children(rec.run_id)]
    view = run_view(rec, await client.metrics(rec.run_id), kids)
    if args.output != "text":
        out.emit(view, args.output)
        return out.EXIT_OK
    fields: list[tuple[str, object]] = [
        ("run_id", view.run_id),
        ("state", view.state),
        ("attempt", view.attempt),
        ("exit_code", view.exit_code),
        ("experiment", view.experiment),
        ("target", view.target),
        ("script", view.script),
        ("agent_id", view.agent_id),
        ("created_at", view.created_at),
        ("started_at", view.started_at),
        ("ended_at", view.ended_at),
    ]
    rows = [(k, "" if v is None else str(v)) for k, v in fields]
    git = view.git
    if git.commit:
        dirty = " (dirty)" if git.dirty else ""
        rows.append(("git", f"{git.commit[:12]} on {git.branch}{dirty}"))
    if view.error:
        rows.append(("error", f"{view.error.kind}: {view.error.message}"))
    if rec.waiting is not None and rec.state is RunState.QUEUED:
        rows.append(("waiting", describe(rec.spec.target, rec.waiting, time.time())))
    if (queued := engine_wait(rec)) is not None:
        rows.append(("waiting", queued))
    if rec.engine_job is not None:
        rows.append(("engine_job", describe_engine_job(rec.engine_job, time.time())))
    for name, values in view.metrics.items():
        shown = [out.number(v) for v in values]
        rows.append(("metric", f"{name} = {shown[0] if len(shown) == 1 else ', '.join(shown)}"))
    rows.extend(("parent", p) for p in [view.parent_id] if p)
    rows.extend(("tag", f"{k} = {v}") for k, v in view.tags.items())
    rows.extend(("property", f"{k} = {v}") for k, v in view.properties.items())
    rows.extend(("child", kid) for kid in view.children)
    rows.extend(("artifact", path) for path in view.artifacts)
    out.table(rows)
    return out.EXIT_OK


async def logs(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    rec = await client.get_run(args.run_id)  # a clear error for an unknown run
    ranked = rec.spec.node_count > 1 and args.rank is None
    async for rank, line in client.logs(args.run_id, follow=args.follow, rank=args.rank):
        if args.output == "text":
            echo_line(line, rank if ranked else None)
        else:
            out.emit_item(log_line_view(rank, line), args.output)
    return out.EXIT_OK


async def cancel(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    reply = await client.cancel(args.run_id)
    if args.output != "text":
        out.emit(CancelView(run_id=reply.run_id, state=reply.state), args.output)
    elif reply.state in TERMINAL:
        print(f"Run {reply.run_id}: {reply.state}")
    else:
        print(f"Run {reply.run_id}: cancel sent; it stops after its grace period")
    return out.EXIT_OK


async def wait(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    rec = await client.wait(args.run_id)
    print_outcome(rec, args.output)
    return out.EXIT_OK if rec.state == "Completed" else out.EXIT_RUN_FAILED


async def download(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    """Into ``DEST/RUN_ID/`` (so runs never overwrite each other), or ``DEST`` with --flat."""
    dest: Path = args.dest if args.flat else args.dest / args.run_id
    files = await client.download(args.run_id, dest)
    if args.output != "text":
        out.emit(DownloadView(run_id=args.run_id, files=[str(f) for f in files]), args.output)
        return out.EXIT_OK
    for f in files:
        print(f)
    if not files:
        print(f"run {args.run_id} has no artifacts", file=sys.stderr)
    return out.EXIT_OK


async def why(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    reply = await client.why(args.run_id)
    if args.output != "text":
        out.emit(reply, args.output, indent=False)
        return out.EXIT_OK
    print(reply.summary)
    for reason, n in sorted(reply.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:>5}  {reason}")
    return out.EXIT_OK


def print_outcome(rec: m.RunRecord, fmt: str = "text") -> None:
    """How the run ended: a line on stderr for people, the outcome view on stdout for
    programs."""
    if fmt in ("json", "yaml"):
        out.emit(outcome_view(rec), fmt, indent=False)
        return
    msg = f"Run {rec.run_id}: {rec.state}"
    if rec.exit_code is not None:
        msg += f" (exit code {rec.exit_code})"
    if rec.error is not None:
        msg += f": {rec.error.kind}: {rec.error.message}"
    print(msg, file=sys.stderr, flush=True)


HANDLERS = {
    "list": run_list.list_runs,
    "show": show,
    "logs": logs,
    "cancel": cancel,
    "wait": wait,
    "download": download,
    "why": why,
}
