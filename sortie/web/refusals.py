"""How the broker client's errors reach a page: one HTTP status, and the message as it is
(it already says what was wrong and what to do)."""

from __future__ import annotations

import nats.errors
from starlette.exceptions import HTTPException

from sortie.client.client import ClientError, NoScheduler, NotFound, RequestRefused

# what a request to the broker may raise that a page shows rather than fails on
UNANSWERED = (ClientError, nats.errors.Error, TimeoutError, OSError)

STATUS = {"not_found": 404, "invalid_state": 409, "conflict": 409, "internal": 502}


def message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc)
    return f"the broker did not answer ({type(exc).__name__}): is `sortie up` running?"


def refusal(exc: BaseException) -> HTTPException:
    if isinstance(exc, RequestRefused):
        return HTTPException(STATUS.get(exc.code, 400), str(exc))
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, NoScheduler):
        return HTTPException(503, str(exc))
    return HTTPException(502, message(exc))
