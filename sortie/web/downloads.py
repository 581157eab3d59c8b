"""Files the dashboard hands out (artifacts, snapshot files, model files): streamed from the
blob store as they are read, never held whole, and checked against their hash on the way (a
blob that turns out corrupt ends the response early, so the browser reports a failed download
rather than keeping wrong bytes).

Nothing a run wrote is served as a page of this dashboard: only images are shown inline,
everything else is an attachment, sandboxed and never sniffed (a run's HTML could otherwise
act with the viewer's session). **Invariant:** every blob the dashboard serves goes through
``blob_response``.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import PurePosixPath
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sortie.bus.blobs import BlobError, BlobStore, stream_blob
from sortie.web.hub import client_of

INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})  # never SVG


def disposition(path: str, inline: bool) -> str:
    name = PurePosixPath(path).name or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(name)}"


def missing(what: str, exc: BlobError | None = None) -> HTTPException:
    why = f": {exc}" if exc is not None else ""
    return HTTPException(404, f"{what} is not in the store{why}")


async def opened(blobs: BlobStore, sha: str, what: str) -> AsyncGenerator[bytes, None]:
    """The blob's bytes as read, once its first chunk is (a missing blob is a 404 saying
    ``what``); raises ``BlobCorrupt`` after the last chunk if they do not match."""
    body = stream_blob(blobs, sha)
    try:
        first = await anext(body, b"")
    except BlobError as exc:
        raise missing(what, exc) from None

    async def rest() -> AsyncGenerator[bytes, None]:
        yield first
        async for chunk in body:
            yield chunk

    return rest()


async def blob_response(request: Request, sha: str, path: str, size: int, *, what: str) -> Response:
    """The blob ``sha`` as the file ``path`` (its last part names the download): an image
    inline unless ``?download``, anything else an attachment."""
    body: AsyncIterator[bytes] = await opened(client_of(request).bus.blobs, sha, what)
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    inline = kind in INLINE_TYPES and "download" not in request.query_params
    headers = {
        "Content-Disposition": disposition(path, inline),
        "Content-Length": str(size),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private, max-age=3600",  # a content address never changes
    }
    return StreamingResponse(
        body, media_type=kind if inline else "application/octet-stream", headers=headers
    )
