"""A run's files on its page: its artifacts (downloaded, images shown) and its snapshot's
files (listed, text shown in the page, anything else downloaded).

Blobs go out through ``downloads.blob_response`` (streamed, hash-checked, only images
inline).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sortie.bus.blobs import BlobError, BlobStore, get_blob
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.web.downloads import blob_response, missing, opened
from sortie.web.hub import client_of
from sortie.web.runpage.reading import run_of

TEXT_CAP = 256 * 1024  # bytes of a snapshot file shown in the page; the rest is downloaded
MANIFESTS_KEPT = 64  # snapshot manifests remembered (they never change: content-addressed)

_manifests: OrderedDict[str, m.Manifest] = OrderedDict()


async def artifact(request: Request) -> Response:
    """``GET /runs/{id}/artifacts/{path}``: one artifact (images inline, else a download;
    ``?download`` always a download)."""
    rec = await run_of(request)
    path = request.path_params["path"]
    found = next((a for a in rec.artifacts if a.path == path), None)
    if found is None:
        raise HTTPException(
            404, f"run {rec.run_id} has no artifact {path!r}: the run page lists its artifacts"
        )
    return await blob_response(
        request, found.sha256, path, found.size, what=f"artifact {path} of run {rec.run_id}"
    )


async def manifest(request: Request, rec: m.RunRecord) -> m.Manifest:
    snapshot = rec.spec.snapshot_id
    if (kept := _manifests.get(snapshot)) is not None:
        _manifests.move_to_end(snapshot)
        return kept
    try:
        found = codec.decode(m.Manifest, await get_blob(client_of(request).bus.blobs, snapshot))
    except (BlobError, codec.BadMessage) as exc:
        raise missing(f"the snapshot {snapshot[:12]} of run {rec.run_id}", None) from exc
    _manifests[snapshot] = found
    while len(_manifests) > MANIFESTS_KEPT:
        _manifests.popitem(last=False)
    return found


async def snapshot(request: Request) -> Response:
    """``GET /runs/{id}/snapshot``: the snapshot's files (path, size, mode), by path."""
    rec = await run_of(request)
    found = await manifest(request, rec)
    files = sorted(found.files, key=lambda f: f.path)
    return JSONResponse(
        {
            "snapshot_id": rec.spec.snapshot_id,
            "script": rec.spec.script,
            "files": [{"path": f.path, "size": f.size, "mode": f.mode} for f in files],
        }
    )


def as_text(data: bytes) -> str | None:
    """The text of a file's first bytes, or None for a binary file (a NUL, not UTF-8)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # cut inside a character at the cap
            return data[: exc.start].decode("utf-8")
        return None


async def _head(blobs: BlobStore, sha: str, what: str) -> bytes:
    """The blob's first ``TEXT_CAP`` bytes (checked against its hash when that is all)."""
    got = bytearray()
    body = await opened(blobs, sha, what)
    try:
        async for chunk in body:
            got += chunk
            if len(got) > TEXT_CAP:
                break
    except BlobError as exc:
        raise missing(what, exc) from None
    finally:
        await body.aclose()
    return bytes(got[:TEXT_CAP])


async def snapshot_file(request: Request) -> Response:
    """``GET /runs/{id}/snapshot/{path}``: a file of the snapshot as JSON for the page (its
    text up to ``TEXT_CAP``, or ``binary``); ``?download``: the file itself."""
    rec = await run_of(request)
    path = request.path_params["path"]
    entry = next((f for f in (await manifest(request, rec)).files if f.path == path), None)
    if entry is None:
        raise HTTPException(404, f"the snapshot of run {rec.run_id} has no file {path!r}")
    what = f"file {path} of run {rec.run_id}'s snapshot"
    if "download" in request.query_params:
        return await blob_response(request, entry.sha256, path, entry.size, what=what)
    head = await _head(client_of(request).bus.blobs, entry.sha256, what)
    text = as_text(head)
    reply: dict[str, Any] = {
        "path": path,
        "size": entry.size,
        "binary": text is None,
        "text": text,
        "truncated": text is not None and entry.size > TEXT_CAP,
    }
    return JSONResponse(reply)
