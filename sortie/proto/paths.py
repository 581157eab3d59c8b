"""The one rule for paths carried in manifests and artifact lists."""

from __future__ import annotations

from pathlib import PurePosixPath


def check_relpath(path: str) -> str | None:
    """Return why ``path`` may not appear in a snapshot or artifact list, or None if it may.

    Allowed: a relative POSIX path with no empty, ``.`` or ``..`` parts and no NUL or
    backslash. Links are resolved by whoever reads the disk; this only judges the string.
    """
    if not path:
        return "empty path"
    if "\x00" in path or "\\" in path:
        return f"{path!r} contains a NUL or backslash"
    if path.startswith("/"):
        return f"{path!r} is absolute"
    parts = PurePosixPath(path).parts
    if any(p in ("..", ".") for p in path.split("/")) or "" in path.split("/"):
        return f"{path!r} contains '..', '.' or an empty part"
    if not parts:
        return f"{path!r} names no file"
    return None
