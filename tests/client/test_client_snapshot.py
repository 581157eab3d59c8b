"""build_manifest / check_script: ignore rules, links, path rule, sizes, determinism."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from sortie.bus.blobs import sha256_bytes
from sortie.client.snapshot import (
    SnapshotError,
    SnapshotPlan,
    build_manifest,
    check_script,
    encode_manifest,
    human_size,
)
from sortie.proto import codec
from sortie.proto.messages import Manifest
from sortie.proto.paths import check_relpath


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = root / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def paths(plan: SnapshotPlan) -> list[str]:
    return [e.path for e in plan.manifest.files]


# --- ignore rules ------------------------------------------------------------------------

IGNORE_CASES = [
    pytest.param(
        {"train.py": "x", "a.log": "", "keep.log": "", ".gitignore": "*.log\n!keep.log\n"},
        [".gitignore", "keep.log", "train.py"],
        id="gitignore-negation",
    ),
    pytest.param(
        {
            "train.py": "x",
            "data/big.bin": "x",
            "notes.txt": "",
            ".gitignore": "data/\n",
            ".amlignore": "notes.txt\n",
        },
        # .amlignore wins: .gitignore's data/ no longer applies, notes.txt goes
        [".amlignore", ".gitignore", "data/big.bin", "train.py"],
        id="amlignore-beats-gitignore",
    ),
    pytest.param(
        {
            "train.py": "x",
            "sub/.gitignore": "*.tmp\n/local.txt\n",
            "sub/a.tmp": "",
            "sub/local.txt": "",
            "sub/deeper/local.txt": "",
            "b.tmp": "",
        },
        # nested patterns apply relative to their directory only
        ["b.tmp", "sub/.gitignore", "sub/deeper/local.txt", "train.py"],
        id="nested-gitignore",
    ),
    pytest.param(
        {
            ".gitignore": "*.csv\n",
            "sub/.gitignore": "!keep.csv\n",
            "sub/keep.csv": "",
            "sub/drop.csv": "",
            "top.csv": "",
        },
        [".gitignore", "sub/.gitignore", "sub/keep.csv"],
        id="deeper-ignore-file-wins",
    ),
    pytest.param(
        {
            ".gitignore": ".venv/\ndata\n",
            ".venv/lib/x.py": "",
            "data/a.bin": "",
            "src/data/b.bin": "",
            "src/m.py": "",
        },
        [".gitignore", "src/m.py"],
        id="directory-patterns",
    ),
    pytest.param(
        {".git/HEAD": "ref", ".git/objects/x": "", "sub/.git": "gitdir: x", "a.py": ""},
        ["a.py"],
        id="dot-git-always-out",
    ),
    pytest.param(
        {".amlignore": "!*\n", ".git/HEAD": "ref", "a.py": ""},
        [".amlignore", "a.py"],
        id="dot-git-out-even-when-amlignore-reincludes",
    ),
    pytest.param(
        {".gitignore": ".gitignore\n", "a.py": ""},
        ["a.py"],
        id="ignore-file-itself-ignored",
    ),
    pytest.param(
        {".amlignore": "", ".gitignore": "*.py\n", "a.py": ""},
        [".amlignore", ".gitignore", "a.py"],
        id="empty-amlignore-still-disables-gitignore",
    ),
]


@pytest.mark.parametrize(("files", "expected"), IGNORE_CASES)
def test_ignore_rules(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    plan = build_manifest(make_tree(tmp_path / "src", files))
    assert paths(plan) == expected


def test_ignored_directory_is_not_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(
        tmp_path / "src",
        {".gitignore": ".venv/\n", ".venv/lib/site/x.py": "", "src/a.py": ""},
    )
    listed: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str | Path) -> object:
        listed.append(Path(path).relative_to(root.resolve()).as_posix())
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    plan = build_manifest(root)
    assert paths(plan) == [".gitignore", "src/a.py"]
    assert sorted(listed) == [".", "src"]


def test_pruned_directory_records_reason(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {".gitignore": ".venv/\n", ".venv/bin/py": "", "a.py": ""})
    plan = build_manifest(root)
    assert plan.ignored == {".venv/": "ignored by .gitignore (pattern '.venv/')"}
    assert plan.ignore_file == ".gitignore"


# --- entries -----------------------------------------------------------------------------


def test_entries_carry_size_mode_hash_sorted(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"b.sh": "#!/bin/sh\n", "a/x.txt": "hello"})
    (root / "b.sh").chmod(0o755)
    (root / "a/x.txt").chmod(0o640)
    plan = build_manifest(root)
    assert [(e.path, e.size, e.mode, e.sha256) for e in plan.manifest.files] == [
        ("a/x.txt", 5, 0o640, sha256_bytes(b"hello")),
        ("b.sh", 10, 0o755, sha256_bytes(b"#!/bin/sh\n")),
    ]
    assert plan.files == 2
    assert plan.total_bytes == 15
    assert plan.blobs == {
        sha256_bytes(b"hello"): root.resolve() / "a/x.txt",
        sha256_bytes(b"#!/bin/sh\n"): root.resolve() / "b.sh",
    }
    assert all(check_relpath(p) is None for p in paths(plan))


def test_same_content_is_one_blob(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": "same", "b/c.txt": "same"})
    plan = build_manifest(root)
    assert plan.files == 2
    assert len(plan.blobs) == 1


def test_empty_directory_gives_empty_manifest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"empty/": ""})
    plan = build_manifest(root)
    assert plan.manifest == Manifest(files=[])
    assert plan.total_bytes == 0


def test_many_files_hashed_in_parallel_match(tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i}.txt": f"content {i}" for i in range(200)}
    plan = build_manifest(make_tree(tmp_path / "src", files))
    assert plan.files == 200
    got = {e.path: e.sha256 for e in plan.manifest.files}
    assert got == {p: sha256_bytes(c.encode()) for p, c in files.items()}


# --- links -------------------------------------------------------------------------------


def test_link_to_file_inside_is_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"real/config.yaml": "lr: 0.1\n"})
    (root / "config.yaml").symlink_to("real/config.yaml")
    plan = build_manifest(root)
    entries = {e.path: e for e in plan.manifest.files}
    assert set(entries) == {"config.yaml", "real/config.yaml"}
    assert entries["config.yaml"].sha256 == entries["real/config.yaml"].sha256
    assert entries["config.yaml"].size == len("lr: 0.1\n")


def test_link_to_directory_inside_is_walked(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"lib/util.py": "u", "lib/.gitignore": "*.pyc\n"})
    (root / "lib/util.pyc").write_text("c")
    (root / "alias").symlink_to("lib", target_is_directory=True)
    plan = build_manifest(root)
    assert paths(plan) == [
        "alias/.gitignore",
        "alias/util.py",
        "lib/.gitignore",
        "lib/util.py",
    ]


def test_link_loop_is_not_followed_forever(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a/f.txt": "x"})
    (root / "a/up").symlink_to("..", target_is_directory=True)
    (root / "self").symlink_to(".", target_is_directory=True)
    plan = build_manifest(root)
    assert paths(plan) == ["a/f.txt"]
    assert any("loops" in w for w in plan.warnings)


def test_ignored_link_is_not_judged(tmp_path: Path) -> None:
    # A venv's python links out of the tree; ignored, it must not stop the snapshot.
    root = make_tree(tmp_path / "src", {".gitignore": ".venv/\nout.txt\n", "a.py": ""})
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").symlink_to("/usr/bin/python3")
    (root / "out.txt").symlink_to(tmp_path / "elsewhere.txt")
    assert paths(build_manifest(root)) == [".gitignore", "a.py"]


LINK_REFUSALS = [
    pytest.param("outside", "elsewhere.txt", "leaves the source directory", id="file-outside"),
    pytest.param("outdir", "elsewhere_dir", "leaves the source directory", id="dir-outside"),
    pytest.param("gone", "missing.txt", "dangling", id="dangling"),
    pytest.param("abs", "/etc/hostname", "leaves the source directory", id="absolute-outside"),
]


@pytest.mark.parametrize(("name", "target", "why"), LINK_REFUSALS)
def test_links_leaving_the_tree_are_refused(
    tmp_path: Path, name: str, target: str, why: str
) -> None:
    (tmp_path / "elsewhere.txt").write_text("secret")
    (tmp_path / "elsewhere_dir").mkdir()
    root = make_tree(tmp_path / "src", {"a.py": ""})
    dest = target if target.startswith("/") else f"../{target}"
    (root / name).symlink_to(dest)
    with pytest.raises(SnapshotError) as err:
        build_manifest(root)
    msg = str(err.value)
    assert name in msg
    assert dest in msg  # where it points
    assert why in msg


# --- path rule and special files -----------------------------------------------------------


def test_backslash_in_name_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a.py": "", "weird\\name.txt": ""})
    with pytest.raises(SnapshotError, match=r"weird\\\\name.txt.*backslash"):
        build_manifest(root)


def test_socket_is_skipped_with_warning(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a.py": ""})
    fifo = root / "pipe"
    os.mkfifo(fifo)
    sock_path = root / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        plan = build_manifest(root)
    finally:
        sock.close()
    assert paths(plan) == ["a.py"]
    assert sorted(w.split(":")[0] for w in plan.warnings) == ["pipe", "s.sock"]


def test_missing_source_dir(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="does not exist"):
        build_manifest(tmp_path / "nope")


def test_source_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("")
    with pytest.raises(SnapshotError, match="is not a directory"):
        build_manifest(tmp_path / "f.py")


# --- sizes ---------------------------------------------------------------------------------


def test_size_warning(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"big.bin": b"x" * 3000, "a.py": ""})
    plan = build_manifest(root, warn_bytes=2048)
    assert plan.warnings == [
        "snapshot is 2.9 KB (over 2.0 KB): consider adding large data to .amlignore/.gitignore"
    ]
    assert build_manifest(root).warnings == []


def test_size_limit_names_largest_paths(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"data/f{i}.bin": b"x" * (1000 * (i + 1)) for i in range(7)}
    files["train.py"] = "print(1)"
    root = make_tree(tmp_path / "src", files)
    with pytest.raises(SnapshotError) as err:
        build_manifest(root, limit_bytes=10_000)
    msg = str(err.value)
    assert "over the limit of 9.8 KB" in msg
    assert human_size(28_008) in msg  # the total
    for i in (6, 5, 4, 3, 2):
        assert f"data/f{i}.bin" in msg
    assert "data/f1.bin" not in msg
    assert "train.py" not in msg
    assert ".gitignore" in msg  # how to exclude them
    assert msg.index("data/f6.bin") < msg.index("data/f2.bin")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (412 * 1024 * 1024, "412 MB")],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


# --- check_script ------------------------------------------------------------------------

SCRIPT_CASES = [
    pytest.param("train.py", None, id="top-level"),
    pytest.param("./train.py", None, id="dot-slash"),
    pytest.param("src/model/run.py", None, id="nested"),
    pytest.param("./src//model/run.py", None, id="normalised"),
    pytest.param("missing.py", "was not found in the source directory", id="missing"),
    pytest.param("scratch.py", r"ignored by \.gitignore \(pattern 'scratch\.py'\)", id="ignored"),
    pytest.param("data/prep.py", r"its directory data/ is ignored by \.gitignore", id="dir-ign"),
    pytest.param("src", "is a directory", id="directory"),
    pytest.param("/abs/train.py", "must be a relative path", id="absolute"),
    pytest.param("../train.py", "must be a relative path", id="dotdot"),
]


@pytest.mark.parametrize(("script", "error"), SCRIPT_CASES)
def test_check_script(tmp_path: Path, script: str, error: str | None) -> None:
    root = make_tree(
        tmp_path / "src",
        {
            ".gitignore": "scratch.py\ndata/\n",
            "train.py": "",
            "scratch.py": "",
            "data/prep.py": "",
            "src/model/run.py": "",
        },
    )
    plan = build_manifest(root)
    if error is None:
        check_script(plan, script)
    else:
        with pytest.raises(SnapshotError, match=error):
            check_script(plan, script)


def test_check_script_names_amlignore(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {".amlignore": "jobs/\n", "jobs/train.py": ""})
    with pytest.raises(SnapshotError, match=r"ignored by \.amlignore \(pattern 'jobs/'\)"):
        check_script(build_manifest(root), "jobs/train.py")


# --- determinism ---------------------------------------------------------------------------


def test_same_tree_same_snapshot_id(tmp_path: Path) -> None:
    files = {"train.py": "print(1)", "lib/a.py": "a", ".gitignore": "*.log\n", "x.log": "y"}
    a = build_manifest(make_tree(tmp_path / "a", files))
    b = build_manifest(make_tree(tmp_path / "b", dict(reversed(files.items()))))
    assert a.snapshot_id == b.snapshot_id
    assert a.manifest == b.manifest
    (tmp_path / "b/lib/a.py").write_text("changed")
    assert build_manifest(tmp_path / "b").snapshot_id != a.snapshot_id


def test_encode_manifest_is_sha_of_codec_bytes(tmp_path: Path) -> None:
    plan = build_manifest(make_tree(tmp_path / "src", {"a.py": "1"}))
    sid, data = encode_manifest(plan.manifest)
    assert data == codec.encode(plan.manifest)
    assert sid == sha256_bytes(data) == plan.snapshot_id
    assert codec.decode(Manifest, data) == plan.manifest
