"""Which blobs nothing references (pure): the scheduler's mark and sweep.

Marked (kept): for every run in the runs bucket, its snapshot manifest, every file that
manifest lists, and every artifact of the run; the manifest of every pipeline data output a
run stored (``RunRecord.data_outputs``) or the step cache keeps (``CachedStep.outputs``: a
later pipeline may reuse it) and every file those list; and every file of every registered model
version (a model outlives the run it came from). Swept: every other blob older than
``grace_s``, so a blob uploaded for a submission not yet recorded (a snapshot on its way, an
attempt's outputs before its report) is never taken.

Staged chunks no blob names (an upload that crashed, a file that changed while it was sent, a
commit refused or never asked for) are swept too, once their last chunk is older than the
same grace: an upload in flight stages its chunks before it asks for the commit.

The manifests are read by the shell (``Marks.manifest_ids`` says which); this module only
decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sortie.proto import messages as m
from sortie.proto.pipelines import CachedStep


@dataclass(frozen=True, kw_only=True)
class BlobInfo:
    sha: str
    size: int
    stored_at: float  # when the broker stored it (unix seconds)


def manifest_ids(records: Iterable[m.RunRecord], cached: Iterable[CachedStep] = ()) -> set[str]:
    """The manifests the runs name (snapshots, pipeline data outputs), and those of the
    cached steps' outputs."""
    ids: set[str] = set()
    for r in records:
        ids.add(r.spec.snapshot_id)
        ids.update(r.data_outputs.values())
    ids.update(sha for c in cached for sha in c.outputs.values())
    return ids


def referenced(
    records: Iterable[m.RunRecord],
    manifests: Mapping[str, m.Manifest | None],
    models: Iterable[m.ModelRecord] = (),
) -> set[str]:
    """Every blob a run needs: its manifests (``manifest_ids``: its snapshot, its data
    outputs, the cached steps'), their files, its artifacts; and every file of a registered
    model. A manifest that could not be read (None) still marks itself."""
    marked: set[str] = {f.sha256 for model in models for f in model.files}
    marked.update(manifests)
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


@dataclass(frozen=True, kw_only=True)
class StagedChunks:
    nuid: str  # the chunk subject's last token (bus.blobs.staging_nuid)
    chunks: int
    size: int  # as far as the shell could tell (whole chunks but the last)
    last_at: float  # when the broker stored its last chunk (unix seconds)


def orphan_chunks(
    staged: Sequence[StagedChunks], named: set[str], now: float, grace_s: float
) -> list[StagedChunks]:
    """The chunk subjects to purge: no stored blob's meta entry names them (``named``: the
    nuids of every meta entry) and nothing was added to them for ``grace_s``."""
    return sorted(
        (c for c in staged if c.nuid not in named and now - c.last_at >= grace_s),
        key=lambda c: c.nuid,
    )
