"""git_info against real temporary repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sortie.client.gitinfo import git_info, strip_credentials
from sortie.proto.messages import GitInfo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.email", "t@example.com")
    git(r, "config", "user.name", "T")
    git(r, "config", "commit.gpgsign", "false")
    return r


def commit_all(repo: Path, msg: str = "c") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


def test_repo_without_commits(repo: Path) -> None:
    assert git_info(repo) == GitInfo(commit=None, branch="main", dirty=False, remote=None)


def test_commit_branch_dirty_toggle(repo: Path) -> None:
    (repo / "train.py").write_text("print(1)\n")
    sha = commit_all(repo)
    (repo / "src").mkdir()
    assert git_info(repo / "src") == GitInfo(commit=sha, branch="main", dirty=False)
    (repo / "train.py").write_text("print(2)\n")
    info = git_info(repo)
    assert info is not None
    assert info.dirty
    git(repo, "checkout", "-q", "--", "train.py")
    assert git_info(repo) == GitInfo(commit=sha, branch="main", dirty=False)
    (repo / "untracked.txt").write_text("x")
    info = git_info(repo)
    assert info is not None
    assert info.dirty


def test_ignored_files_do_not_make_dirty(repo: Path) -> None:
    (repo / ".gitignore").write_text("*.log\n")
    commit_all(repo)
    (repo / "run.log").write_text("x")
    info = git_info(repo)
    assert info is not None
    assert not info.dirty


def test_detached_head_has_no_branch(repo: Path) -> None:
    (repo / "a").write_text("1")
    first = commit_all(repo)
    (repo / "a").write_text("2")
    commit_all(repo)
    git(repo, "checkout", "-q", first)
    assert git_info(repo) == GitInfo(commit=first, branch=None, dirty=False)


@pytest.mark.parametrize(
    ("remotes", "expected"),
    [
        ([("origin", "https://user:s3cret@github.com/org/x.git")], "https://github.com/org/x.git"),
        ([("origin", "https://ghp_TOKEN@github.com/org/x.git")], "https://github.com/org/x.git"),
        (
            [("upstream", "git@github.com:org/up.git"), ("origin", "https://h.example/o.git")],
            "https://h.example/o.git",
        ),
        ([("zeta", "ssh://git@h.example:2222/z.git")], "ssh://git@h.example:2222/z.git"),
        ([("fork", "git@github.com:me/x.git")], "git@github.com:me/x.git"),
    ],
    ids=["user-password", "token-as-user", "origin-preferred", "ssh-url", "scp-like"],
)
def test_remote(repo: Path, remotes: list[tuple[str, str]], expected: str) -> None:
    for name, url in remotes:
        git(repo, "remote", "add", name, url)
    info = git_info(repo)
    assert info is not None
    assert info.remote == expected
    assert "s3cret" not in repr(info) and "TOKEN" not in repr(info)


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:tok@host/x", "https://host/x"),
        ("http://tok@host:8080/x?y=1", "http://host:8080/x?y=1"),
        ("ssh://git:pw@host/x", "ssh://git@host/x"),
        ("ssh://git@host/x", "ssh://git@host/x"),
        ("git@host:x/y.git", "git@host:x/y.git"),
        ("/srv/git/x.git", "/srv/git/x.git"),
        ("file:///srv/git/x.git", "file:///srv/git/x.git"),
    ],
)
def test_strip_credentials(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


def test_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_info(plain) is None


def test_missing_directory(tmp_path: Path) -> None:
    assert git_info(tmp_path / "nope") is None


def test_no_git_installed(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo))  # no git binary here
    assert git_info(repo) is None
