"""A run's metric points on its page, pushed as they are logged (server-sent events,
resumable after a reconnect). The page draws every numeric metric over its step (or log
order), table metrics (``log_row`` / ``log_table``) as tables, and image metrics
(``log_image``: the value names an artifact) as images.

A child run's points are on its parent's subjects, marked with its id (``MetricPoint.run``);
a sweep's trial's are on its own (``client.metric_source``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from sortie.client.client import ClientError, metric_source
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL
from sortie.web import sse
from sortie.web.hub import client_of
from sortie.web.runpage.reading import after_seq, run_of


def point(p: m.MetricPoint) -> list[object]:
    """[name, value, step, column] (a value JSON cannot hold, NaN or infinite, as null)."""
    value: m.MetricValue | None = p.value
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # JSON has no NaN: a gap in the chart
    return [p.name, value, p.step, p.column]


async def stream(request: Request) -> Response:
    """``GET /runs/{id}/metrics/stream``: events ``points`` (id: the stream sequence);
    ``end`` once a run that had ended when the page asked has sent them all."""
    rec = await run_of(request)
    after = after_seq(sse.last_event_id(request))
    client = client_of(request)
    source, mine = metric_source(rec)
    follow = rec.state not in TERMINAL

    async def events() -> AsyncIterator[sse.Event]:
        batches = client.batches(m.MetricBatch, source, follow=follow, after=after)
        async with contextlib.aclosing(batches):
            try:
                async for seq, batch in batches:
                    points = [point(p) for p in batch.points if p.run == mine]
                    if points:
                        yield sse.Event("points", json.dumps({"points": points}), id=str(seq))
            except ClientError as exc:
                yield sse.Event("failed", json.dumps({"message": str(exc)}))
                return
        yield sse.Event("end", "{}")

    return sse.stream(request, events())
