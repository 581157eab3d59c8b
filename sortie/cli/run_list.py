"""`sortie run list`: pages of the scheduler's run index, or (no scheduler answering) every
record read and filtered here, with the same rule (``proto/run_index.admits``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from sortie.cli import output as out
from sortie.client.client import Client, NoScheduler
from sortie.client.views import children_under_parents, iso, run_summary_view
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from sortie.proto.waiting import shown_state


def query_of(args: argparse.Namespace) -> q.RunQuery:
    """The filters given on the command line, as a query of the first page."""
    return q.RunQuery(
        experiment=args.experiment,
        states=[RunState(s) for s in args.state or ()],
        target=args.target,
        tags=list(args.tag or ()),
        search=args.search,
        created_since=args.since,
        limit=min(args.limit or q.MAX_LIMIT, q.MAX_LIMIT),
    )


def select(runs: Iterable[m.RunRecord], query: q.RunQuery, most: int | None) -> list[m.RunRecord]:
    """The runs ``query``'s filters keep, in the order given (newest first), ``most`` at most."""
    kept = [r for r in runs if q.keeps(query, r)]
    return kept[:most] if most is not None else kept


async def listed(client: Client, args: argparse.Namespace) -> list[m.RunRecord]:
    query = query_of(args)
    if args.limit is None and not q.filtered(query):
        return await client.list_runs()  # every run: one pass over the bucket is quickest
    try:
        return await client.query_all_runs(query, args.limit)
    except NoScheduler:
        print(
            "no scheduler answers, so every run record is read (slower with many runs)",
            file=sys.stderr,
        )
        return select(await client.list_runs(args.experiment), query, args.limit)


async def list_runs(client: Client, args: argparse.Namespace, _: list[str]) -> int:
    runs = children_under_parents(await listed(client, args))
    if args.output != "text":
        out.emit([run_summary_view(r) for r in runs], args.output, indent=False)
        return out.EXIT_OK
    rows = [("RUN ID", "EXPERIMENT", "TARGET", "STATE", "ATTEMPT", "CREATED")]
    rows += [
        (
            r.run_id if r.parent_id is None else f"  {r.run_id}",  # a child, under its parent
            r.spec.experiment,
            r.spec.target,
            str(shown_state(r)),
            str(r.attempt),
            iso(r.created_at) or "",
        )
        for r in runs
    ]
    out.table(rows)
    return out.EXIT_OK
