"""Snapshot manifests from a hostile client, and source trees with links that leave them.

The agent refuses a manifest with a path that is absolute, has ``..`` (or ``.``, or an empty
part), names a file under another file, or names its blob with anything but a sha256 (the
blob name is a path in the agent's cache); what it accepts, it writes inside the run
directory only. The client never snapshots a file reached through a link leaving the tree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sortie.agents.snapshot_cache import SnapshotCache, SnapshotError, refused_paths
from sortie.client.snapshot import SnapshotError as ClientSnapshotError
from sortie.client.snapshot import build_manifest
from sortie.proto import messages as m

GOOD_SHA = hashlib.sha256(b"x").hexdigest()


def manifest(*entries: tuple[str, str]) -> m.Manifest:
    return m.Manifest(
        files=[m.FileEntry(path=p, size=1, mode=0o644, sha256=sha) for p, sha in entries]
    )


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([("../x", GOOD_SHA)], "contains '..'"),
        ([("a/../../x", GOOD_SHA)], "contains '..'"),
        ([("..", GOOD_SHA)], "contains '..'"),
        ([("/etc/passwd", GOOD_SHA)], "is absolute"),
        ([("//etc/passwd", GOOD_SHA)], "is absolute"),
        ([("a/./b", GOOD_SHA)], "contains '..', '.'"),
        ([("a//b", GOOD_SHA)], "an empty part"),
        ([("a/", GOOD_SHA)], "an empty part"),
        ([("", GOOD_SHA)], "empty path"),
        ([("a\\..\\..\\x", GOOD_SHA)], "NUL or backslash"),
        ([("a\x00b", GOOD_SHA)], "NUL or backslash"),
        ([("a", "../../../../etc/passwd")], "not a sha256"),
        ([("a", "/etc/passwd")], "not a sha256"),
        ([("a", GOOD_SHA.upper())], "not a sha256"),
        ([("a", GOOD_SHA + "0")], "not a sha256"),
        ([("a", "")], "not a sha256"),
        ([("outputs", GOOD_SHA)], "where the run's artifacts go"),
        ([("a", GOOD_SHA), ("a", GOOD_SHA)], "appears twice"),
        ([("a", GOOD_SHA), ("a/b", GOOD_SHA)], "lies under 'a', which is a file"),
        ([("a/b/c", GOOD_SHA), ("a/b", GOOD_SHA)], "lies under 'a/b', which is a file"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(
    entries: list[tuple[str, str]], why: str
) -> None:
    reasons = refused_paths(manifest(*entries))
    assert reasons and any(why in r for r in reasons), reasons


def test_a_good_manifest_is_accepted() -> None:
    ok = manifest(("train.py", GOOD_SHA), ("lib/util.py", GOOD_SHA), ("outputs/keep", GOOD_SHA))
    assert refused_paths(ok) == []


async def test_a_snapshot_id_that_is_not_a_sha256_is_never_read(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0")
    cache = SnapshotCache(tmp_path / "blobs", store=None)  # type: ignore[arg-type]  # never reached
    for bad in ("../passwd", str(tmp_path / "passwd"), "0" * 63):
        with pytest.raises(SnapshotError, match="is not a sha256"):
            await cache.manifest(bad)


# --- materialising what is accepted (Hypothesis) ------------------------------------------------

GOOD_PART = st.sampled_from(["a", "b", "c.py", "outputs", "~", "-"])
PART = st.one_of(GOOD_PART, st.sampled_from(["..", ".", "", "a\\b", "x\x00"]))
GOOD_PATH = st.lists(GOOD_PART, min_size=1, max_size=3).map("/".join)
PATH = st.one_of(
    st.lists(PART, min_size=1, max_size=4).map("/".join),
    st.lists(PART, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
)
SHA = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.sampled_from(["../" * 6 + "etc/passwd", "/etc/passwd", "..", "", GOOD_SHA.upper()]),
)
GOOD_ENTRY = st.tuples(GOOD_PATH, st.just(GOOD_SHA))
ENTRIES = st.lists(st.one_of(GOOD_ENTRY, GOOD_ENTRY, st.tuples(PATH, SHA)), min_size=1, max_size=4)


def _files_under(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, files in os.walk(root) for f in files}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=ENTRIES)
def test_an_accepted_manifest_is_written_inside_the_run_directory_only(
    entries: list[tuple[str, str]],
) -> None:
    man = manifest(*entries)
    if refused_paths(man):
        event("refused")
        return
    event("accepted")
    for entry in man.files:
        p = PurePosixPath(entry.path)
        assert not p.is_absolute() and ".." not in p.parts and p.as_posix() == entry.path
        assert len(entry.sha256) == 64
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        cache = SnapshotCache(sandbox / "blobs", store=None)
        for entry in man.files:
            blob = cache.path(entry.sha256)
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(entry.sha256.encode())
        outside = _files_under(sandbox)
        workdir = sandbox / "runs" / "r1" / "1"
        cache._copy_tree(man, workdir)
        written = _files_under(sandbox) - outside
        assert all(f.resolve().is_relative_to(workdir.resolve()) for f in written)
        assert {f.relative_to(workdir).as_posix() for f in written} == {e.path for e in man.files}
        # outputs/ is made by materialise, not by the copy (pipeline data is laid out by the
        # same copy and has none): tests/agents check a run's outputs/ exists


# --- the client: links that leave the source tree (Hypothesis) -----------------------------------

LINK_AT = st.sampled_from(["l1", "sub/l2", "sub/deeper/l3"])
LINK_TO = st.sampled_from(
    [
        "..",
        "../..",
        "../outside",
        "../outside/secret.txt",
        "../../outside/secret.txt",
        "../../../outside/dir",
        "sub/../../outside",
        "a.py",
        "../a.py",
        "deeper",
        ".",
        "/etc",
        "/etc/hostname",
        "{outside}",
        "{outside}/secret.txt",
        "{root}/a.py",
        "{root}/sub",
        "missing",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(links=st.dictionaries(LINK_AT, LINK_TO, min_size=1, max_size=3))
def test_the_client_never_snapshots_a_file_outside_the_tree(links: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp).resolve()
        outside = base / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "secret.txt").write_text("outside secret")
        (outside / "dir" / "more.txt").write_text("more outside")
        root = base / "src"
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "a.py").write_text("print(1)")
        (root / "sub" / "b.py").write_text("print(2)")
        for at, to in links.items():
            (root / at).symlink_to(to.format(outside=outside, root=root))
        try:
            plan = build_manifest(root)
        except ClientSnapshotError as exc:
            assert "link" in str(exc) or "loops" in str(exc)
            event("refused")
            return
        event("snapshotted")
        for sha, source in plan.blobs.items():
            assert source.resolve().is_relative_to(root), (sha, source)
        outside_shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in _files_under(outside)}
        assert not outside_shas & {f.sha256 for f in plan.manifest.files}
        assert refused_paths(plan.manifest) == []
