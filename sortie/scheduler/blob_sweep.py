"""Which blobs nothing references (pure): the scheduler's mark and sweep.

Marked (kept): for every run in the runs bucket, its snapshot manifest, every file that
manifest lists, and every artifact of the run. Swept: every other blob older than
``grace_s``, so a blob uploaded for a submission not yet recorded (a snapshot on its way, an
attempt's outputs before its report) is never taken.

The manifests are read by the shell (``Marks.manifest_ids`` says which); this module only
decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sortie.proto import messages as m


@dataclass(frozen=True, kw_only=True)
class BlobInfo:
    sha: str
    size: int
    stored_at: float  # when the broker stored it (unix seconds)


def manifest_ids(records: Iterable[m.RunRecord]) -> set[str]:
    """The snapshot manifests the runs name."""
    return {r.spec.snapshot_id for r in records}


def referenced(
    records: Iterable[m.RunRecord], manifests: Mapping[str, m.Manifest | None]
) -> set[str]:
    """Every blob a run needs: its manifest, the manifest's files, its artifacts. A manifest
    that could not be read (None) still marks itself."""
    marked: set[str] = set()
    for rec in records:
        marked.add(rec.spec.snapshot_id)
        marked.update(a.sha256 for a in rec.artifacts)
    for manifest in manifests.values():
        if manifest is not None:
            marked.update(f.sha256 for f in manifest.files)
    return marked


def sweep(
    blobs: Sequence[BlobInfo], marked: set[str], now: float, grace_s: float
) -> list[BlobInfo]:
    """The blobs to delete: unmarked and older than ``grace_s``."""
    return sorted(
        (b for b in blobs if b.sha not in marked and now - b.stored_at >= grace_s),
        key=lambda b: b.sha,
    )
