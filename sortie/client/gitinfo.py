"""What git knows about a source directory, for the run history.

Best effort: no git, no repository, a timeout or a repository git refuses to read (e.g.
"dubious ownership") all give ``None`` rather than failing a submission. Remote URLs are
recorded without credentials.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sortie.proto.messages import GitInfo

GIT_TIMEOUT_S = 10.0

# Schemes where any user part may be a token (GitHub accepts https://TOKEN@github.com/...).
_HTTP_SCHEMES = frozenset({"http", "https", "ftp", "ftps"})


class _GitFailed(Exception):
    pass


def _git(path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",  # `git status` must not take the index lock
        "LC_ALL": "C",
    }
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _GitFailed(str(exc)) from None
    if proc.returncode != 0:
        raise _GitFailed(proc.stderr.strip())
    return proc.stdout


def strip_credentials(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://host/x``; ``ssh://git@host/x`` is kept.

    For http(s) the whole user part goes (it may be a token on its own); for other URL
    schemes only a password goes. scp-like ``git@host:path`` has no password and is kept.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme.lower() in _HTTP_SCHEMES:
        netloc = hostport
    else:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit(parts._replace(netloc=netloc))


def git_info(path: Path) -> GitInfo | None:
    """Commit, branch, dirty flag and remote of the work tree holding ``path``, or None."""
    try:
        if _git(path, "rev-parse", "--is-inside-work-tree").strip() != "true":
            return None
    except _GitFailed:
        return None
    try:
        commit: str | None = _git(path, "rev-parse", "--verify", "--quiet", "HEAD").strip()
    except _GitFailed:
        commit = None  # no commits yet
    try:
        branch: str | None = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD").strip()
    except _GitFailed:
        branch = None  # detached HEAD
    try:
        dirty = bool(_git(path, "status", "--porcelain", "--untracked-files=normal").strip())
    except _GitFailed:
        dirty = False
    remote: str | None = None
    try:
        names = _git(path, "remote").split()
        if names:
            name = "origin" if "origin" in names else names[0]
            remote = strip_credentials(_git(path, "remote", "get-url", name).strip()) or None
    except _GitFailed:
        remote = None
    return GitInfo(commit=commit or None, branch=branch or None, dirty=dirty, remote=remote)
