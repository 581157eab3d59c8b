"""The scheduler's mark and sweep of blobs (scheduler.blob_sweep), by table."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.blob_sweep import (
    BlobInfo,
    StagedChunks,
    manifest_ids,
    orphan_chunks,
    referenced,
    sweep,
)

NOW = 1_000_000.0
GRACE = 3600.0


def _rec(run_id: str, snapshot: str, artifacts: list[str]) -> m.RunRecord:
    return m.RunRecord(
        run_id=run_id,
        spec=m.RunSpec(experiment="e", script="t.py", snapshot_id=snapshot),
        state=RunState.COMPLETED,
        attempt=1,
        created_at=0.0,
        artifacts=[m.Artifact(path=f"outputs/{a}", size=1, sha256=a) for a in artifacts],
    )


def _manifest(*shas: str) -> m.Manifest:
    return m.Manifest(
        files=[m.FileEntry(path=f"f{i}", size=1, mode=0o644, sha256=s) for i, s in enumerate(shas)]
    )


def test_marked_are_manifests_their_files_and_artifacts() -> None:
    records = [_rec("r1", "man1", ["out1"]), _rec("r2", "man2", [])]
    assert manifest_ids(records) == {"man1", "man2"}
    # man2 could not be read: it still marks itself
    marked = referenced(records, {"man1": _manifest("src1", "src2"), "man2": None})
    assert marked == {"man1", "man2", "out1", "src1", "src2"}


def _blob(sha: str, age: float) -> BlobInfo:
    return BlobInfo(sha=sha, size=10, stored_at=NOW - age)


@pytest.mark.parametrize(
    ("blobs", "marked", "swept"),
    [
        ([], set(), []),
        # unmarked and older than the grace: swept (sorted by name)
        ([_blob("b", GRACE + 1), _blob("a", GRACE)], set(), ["a", "b"]),
        # marked: kept however old
        ([_blob("a", 100 * GRACE)], {"a"}, []),
        # younger than the grace (an upload whose run is not recorded yet): kept
        ([_blob("a", GRACE - 1)], set(), []),
    ],
)
def test_sweep(blobs: list[BlobInfo], marked: set[str], swept: list[str]) -> None:
    assert [b.sha for b in sweep(blobs, marked, NOW, GRACE)] == swept


def _staged(nuid: str, age: float) -> StagedChunks:
    return StagedChunks(nuid=nuid, chunks=2, size=10, last_at=NOW - age)


@pytest.mark.parametrize(
    ("staged", "named", "purged"),
    [
        ([], set(), []),
        # no blob names them and their last chunk is older than the grace: purged (by name)
        ([_staged("b-2", GRACE + 1), _staged("a-1", GRACE)], set(), ["a-1", "b-2"]),
        # a stored blob's chunks: kept however old
        ([_staged("a-1", 100 * GRACE)], {"a-1"}, []),
        # an upload still staging, or about to ask for its commit: kept
        ([_staged("a-1", GRACE - 1)], set(), []),
        # the loser of two uploads of one blob goes, the stored one stays
        ([_staged("a-1", 2 * GRACE), _staged("a-2", 2 * GRACE)], {"a-2"}, ["a-1"]),
    ],
)
def test_orphan_chunks(staged: list[StagedChunks], named: set[str], purged: list[str]) -> None:
    assert [c.nuid for c in orphan_chunks(staged, named, NOW, GRACE)] == purged
