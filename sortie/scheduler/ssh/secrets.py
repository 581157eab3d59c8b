"""What the scheduler keeps to reconnect to an attached machine: on its own host only.

`data_dir/secrets/<name>.json`, the directory 0700 and each file 0600, written atomically to a
temporary file created with mode 0600 (never readable by others, not even briefly). Nothing
here goes to the KV store, run records, logs or `compute show`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets as _random
from pathlib import Path

from sortie.scheduler.ssh import SshCredentials

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FIELDS = ("password", "private_key", "passphrase")


def _path(data_dir: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"bad compute name for a secrets file: {name!r}")
    return data_dir / "secrets" / f"{name}.json"


def private_dir(d: Path) -> Path:
    """``d``, created 0700 (and tightened again if someone loosened it)."""
    d.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


def _secrets_dir(data_dir: Path) -> Path:
    return private_dir(data_dir / "secrets")


def save_credentials(data_dir: Path, name: str, creds: SshCredentials) -> None:
    path = _path(data_dir, name)
    _secrets_dir(data_dir)
    write_private(path, json.dumps({f: getattr(creds, f) for f in _FIELDS}).encode())


def write_private(path: Path, body: bytes) -> None:
    """Write ``path`` (in a 0700 directory) atomically, 0600 from its first byte, synced."""
    d = path.parent
    tmp = d / f".{path.name}.{_random.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_credentials(data_dir: Path, name: str) -> SshCredentials:
    path = _path(data_dir, name)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no stored SSH credentials for {name!r} (expected {path}); attach it again"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a credentials file")
    values = {f: raw.get(f) for f in _FIELDS}
    for f, v in values.items():
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{path}: {f} is not a string")
    return SshCredentials(**values)


def delete_credentials(data_dir: Path, name: str) -> None:
    _path(data_dir, name).unlink(missing_ok=True)
