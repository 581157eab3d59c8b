"""What a viewer who may act can do to a run from its page: cancel it, submit it again.
Each handler passes ``access.action_form`` first (may act, same origin, CSRF token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sortie.client.client import ClientError
from sortie.web.access import action_form
from sortie.web.hub import client_of
from sortie.web.runpage.reading import refusal


async def cancel(request: Request) -> Response:
    """``POST /runs/{id}/cancel``: the state after the request (Canceled, or the run's own
    until its agent has stopped it)."""
    await action_form(request)
    try:
        reply = await client_of(request).cancel(request.path_params["run_id"])
    except ClientError as exc:
        raise refusal(exc) from None
    return JSONResponse({"ok": True, "run_id": reply.run_id, "state": str(reply.state)})


async def resubmit(request: Request) -> Response:
    """``POST /runs/{id}/resubmit``: a new run from the stored one's snapshot and
    configuration (``Client.resubmit``); its id."""
    await action_form(request)
    try:
        new_id = await client_of(request).resubmit(request.path_params["run_id"])
    except ClientError as exc:
        raise refusal(exc) from None
    return JSONResponse({"ok": True, "run_id": new_id})
