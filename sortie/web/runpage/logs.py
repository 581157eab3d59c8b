"""A run's output on its page: followed live (server-sent events, resumable after a
reconnect from the stream sequence the page last saw) and downloaded as a text file.

Both read through the client's believed-provenance reader (``Client.batches``): only the
lines of the agents that held the run's attempts are shown. The live stream ends at the
end-of-log marker the scheduler publishes when the run ends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sortie.client.client import ClientError
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL
from sortie.web import sse
from sortie.web.hub import client_of
from sortie.web.runpage.reading import after_seq, rank_param, run_of


def _lines(batch: m.LogBatch) -> list[list[object]]:
    """A batch's lines as the page takes them: [rank, stream, text, time]."""
    return [[batch.rank, line.stream, line.text, line.t] for line in batch.lines]


async def stream(request: Request) -> Response:
    """``GET /runs/{id}/logs/stream[?rank=N]``: events ``lines`` (id: the stream sequence)
    until ``end`` (the end-of-log marker; for a run that had ended, its last line)."""
    rec = await run_of(request)
    rank = rank_param(request)
    after = after_seq(sse.last_event_id(request))
    client = client_of(request)
    follow = rec.state not in TERMINAL  # an ended run's output is all there (no waiting)

    async def events() -> AsyncIterator[sse.Event]:
        batches = client.batches(m.LogBatch, rec.run_id, follow=follow, after=after)
        async with contextlib.aclosing(batches):
            try:
                async for seq, batch in batches:
                    if batch.lines and (rank is None or batch.rank == rank):
                        data = json.dumps({"lines": _lines(batch)})
                        yield sse.Event("lines", data, id=str(seq))
                    if batch.eof:
                        break
            except ClientError as exc:
                yield sse.Event("failed", json.dumps({"message": str(exc)}))
                return
        yield sse.Event("end", "{}")

    return sse.stream(request, events())


def text_line(rank: int, line: m.LogLine, ranked: bool) -> str:
    """One line of the downloaded log, as `sortie run logs` prints it."""
    prefix = f"[rank {rank}] " if ranked else ""
    prefix += "[sortie] " if line.stream == "system" else ""
    return f"{prefix}{line.text}\n"


async def download(request: Request) -> Response:
    """``GET /runs/{id}/logs.txt[?rank=N]``: the output so far, all ranks or one."""
    rec = await run_of(request)
    rank = rank_param(request)
    ranked = rec.spec.node_count > 1 and rank is None
    client = client_of(request)

    async def body() -> AsyncIterator[bytes]:
        async for r, line in client.logs(rec.run_id, rank=rank):
            yield text_line(r, line, ranked).encode()

    name = rec.run_id if rank is None else f"{rec.run_id}-rank{rank}"
    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.log"'},
    )
