"""Files the dashboard hands out (artifacts, snapshot files, model files): streamed from the
blob store as they are read, never held whole, and checked against their hash on the way (a
blob that turns out corrupt ends the response early, so the browser reports a failed download
rather than saving wrong bytes)."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from sortie.bus.blobs import BlobError, stream_blob
from sortie.client.client import Client

# shown in the page; never SVG, which may carry script
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


async def blob_response(
    client: Client, sha: str, path: str, size: int | None = None, *, inline: bool = False
) -> StreamingResponse:
    """The blob ``sha`` as the file ``path`` (its last part names the download); ``inline``:
    shown in the browser where it can be (images, text), else saved."""
    chunks = stream_blob(client.bus.blobs, sha)
    try:
        first = await anext(chunks, b"")
    except BlobError as exc:
        raise HTTPException(404, f"{path}: {exc}") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    name = path.rsplit("/", 1)[-1] or "download"
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    shown = inline and (kind in INLINE_IMAGES or kind.startswith("text/"))
    headers = {
        "Content-Disposition": f"{'inline' if shown else 'attachment'}; "
        f"filename*=UTF-8''{quote(name)}",
        "X-Content-Type-Options": "nosniff",
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    if kind.startswith("text/"):
        kind = "text/plain; charset=utf-8"  # never rendered as the dashboard's own HTML
    return StreamingResponse(body(), media_type=kind, headers=headers)
