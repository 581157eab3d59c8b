"""What the run page's handlers share: the run named in the path, and the client's errors
as HTTP refusals that say what to do."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from sortie.client.client import ClientError, NotFound
from sortie.proto import messages as m
from sortie.web.hub import client_of


def refusal(exc: ClientError) -> HTTPException:
    return HTTPException(404 if isinstance(exc, NotFound) else 409, str(exc))


async def run_of(request: Request) -> m.RunRecord:
    """The run of ``{run_id}``; 404 (no such run) or 409 (its record cannot be read)."""
    try:
        return await client_of(request).get_run(request.path_params["run_id"])
    except ClientError as exc:
        raise refusal(exc) from None


def after_seq(text: str | None) -> int:
    """A stream sequence sent back by a reconnecting page (``Last-Event-ID``); 0: from the
    first."""
    try:
        return max(0, int(text or 0))
    except ValueError:
        raise HTTPException(400, f"Last-Event-ID must be a stream sequence, got {text!r}") from None


def rank_param(request: Request) -> int | None:
    """``?rank=N``: one node's lines of a multi-node run; none or "all": every rank."""
    text = request.query_params.get("rank", "")
    if text in ("", "all"):
        return None
    if not text.isdigit():
        raise HTTPException(400, f"rank must be a node's number (0, 1, ...) or all, got {text!r}")
    return int(text)
