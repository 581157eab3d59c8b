"""Storing a completed pipeline step's output data content-addressed, as a snapshot is.

Each ``out/NAME`` (agents.pipeline_data) becomes a ``Manifest`` of its files (path, size, mode,
sha256) stored as a blob named by its own sha256, after the file blobs the store lacks; the
manifest id is what the step's Completed report carries (``RunReport.data_outputs``). The
directory is read as ``outputs/`` is (agents.outputs): never through a link, regular files
only, the run's own. A link leaving the directory is not stored (the run's log says so); any
other file that cannot be read that way fails the run (:class:`DataError`), as does a full
store (``StoreFull``): a step whose outputs are not all stored did not complete. An empty
directory is an empty manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
from nats.js import JetStreamContext

from sortie.agents.outputs import OUTPUT_COMMIT_WAIT_S, Entry, put_output, scan_dir
from sortie.agents.pipeline_data import OUT
from sortie.agents.upload_progress import UploadProgress
from sortie.bus.blobs import BlobError, BlobStore, encode_manifest, missing_blobs, put_blob
from sortie.bus.store_limits import until_stored
from sortie.proto import messages as m
from sortie.proto.paths import check_relpath

Say = Callable[[str], None]


class DataError(Exception):
    """An output directory could not be stored; the message says which file and why."""


def data_manifest(found: list[Entry]) -> m.Manifest:
    """The manifest of the files found, by path (pure)."""
    return m.Manifest(
        files=[
            m.FileEntry(path=e.rel, size=e.size, mode=e.mode, sha256=e.sha256)
            for e in sorted(found, key=lambda e: e.rel)
        ]
    )


def refusals(name: str, refused: list[str], found: list[Entry]) -> str | None:
    """Why output ``name`` cannot be stored as it is (pure), or None."""
    bad = [*refused]
    bad += [f"{name}/{e.rel} ({why})" for e in found if (why := check_relpath(e.rel))]
    if not bad:
        return None
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return (
        f"output data {name!r} cannot be stored: {'; '.join(bad[:3])}{more}. A step's output "
        "directory may hold only its own regular files (a link inside it is stored as the "
        "file it points to)"
    )


async def store_outputs(
    store: BlobStore, js: JetStreamContext, root: Path, names: list[str], say: Say
) -> dict[str, str]:
    """Store each ``root/out/NAME``; its manifest id by name. Raises :class:`DataError` or
    ``StoreFull``."""
    return {name: await store_dir(store, js, root / OUT / name, name, say) for name in names}


@dataclass(frozen=True)
class _Dir:
    """One output directory being stored."""

    name: str
    base: Path  # resolved
    owner: int  # its owner, the run's user: only its own files are read (agents.outputs)


async def store_dir(
    store: BlobStore, js: JetStreamContext, directory: Path, name: str, say: Say
) -> str:
    """Store one output directory (its files, then its manifest); its manifest id."""
    scan = await asyncio.to_thread(scan_dir, directory, name)
    for skipped in scan.leaving:
        say(f"output data: not storing {skipped}")
    why = refusals(name, scan.refused, scan.found)
    if why is not None:
        raise DataError(why)
    manifest_id, manifest = encode_manifest(data_manifest(scan.found))
    first = {e.sha256: e for e in reversed(scan.found)}  # one file per content
    try:
        base = await asyncio.to_thread(directory.resolve)
        where = _Dir(name=name, base=base, owner=(await asyncio.to_thread(base.stat)).st_uid)
        missing = await missing_blobs(store, [*first, manifest_id])
        to_send = [first[sha] for sha in sorted(missing - {manifest_id})]
        progress = UploadProgress(sum(e.size for e in to_send), say, what=f"output data {name}")
        for entry in to_send:
            await _send_file(store, js, where, entry, progress)
        if manifest_id in missing:
            await until_stored(
                js,
                lambda: put_blob(store, manifest_id, manifest, wait_s=OUTPUT_COMMIT_WAIT_S),
                f"the manifest of {name}",
                len(manifest),
            )
    except (nats.errors.Error, TimeoutError, OSError, BlobError) as exc:
        raise DataError(f"output data {name!r} not stored: {exc}") from None
    say(
        f"output data {name}: {len(scan.found)} files, {len(to_send)} uploaded, "
        f"{len(first) - len(to_send)} already stored; manifest {manifest_id[:12]}"
    )
    return manifest_id


async def _send_file(
    store: BlobStore, js: JetStreamContext, where: _Dir, entry: Entry, progress: UploadProgress
) -> None:
    shown = f"{where.name}/{entry.rel}"
    async with progress.file(shown, entry.size) as count:
        await until_stored(
            js,
            lambda: put_output(
                store, entry.sha256, where.base, entry.real, where.owner, count, shown=where.name
            ),
            shown,
            entry.size,
        )
