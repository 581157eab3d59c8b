"""Runs' secret environment variables, kept on the scheduler's host only (shell side).

``<data_dir>/run-secrets/<run id>.json``: the directory 0700, each file 0600, written
atomically (see ``scheduler.ssh.secrets.write_private``). A file is written before its run
is first stored, read back when the scheduler restarts (so a requeued run still gets its
values) and deleted once the run has ended. Nothing here goes to the KV store, a record, a
reply or a log line.
"""

from __future__ import annotations

from pathlib import Path

from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.ssh.secrets import private_dir, write_private

DIRNAME = "run-secrets"
SUFFIX = ".json"


def _path(data_dir: Path, run_id: str) -> Path:
    subjects.check_token("run id", run_id)  # never a path of its own
    return data_dir / DIRNAME / f"{run_id}{SUFFIX}"


def save(data_dir: Path, run_id: str, secret: m.SecretEnv) -> None:
    path = _path(data_dir, run_id)
    private_dir(path.parent)
    write_private(path, codec.encode(secret))


def load_all(data_dir: Path) -> tuple[dict[str, m.SecretEnv], list[str]]:
    """Every stored run's secrets by run id, and the files that could not be read."""
    d = data_dir / DIRNAME
    found: dict[str, m.SecretEnv] = {}
    unreadable: list[str] = []
    if not d.is_dir():
        return found, unreadable
    for path in sorted(d.glob(f"*{SUFFIX}")):
        run_id = path.name[: -len(SUFFIX)]
        try:
            subjects.check_token("run id", run_id)
            found[run_id] = codec.decode(m.SecretEnv, path.read_bytes())
        except (ValueError, OSError):  # codec.BadMessage is a ValueError
            unreadable.append(path.name)
    return found, unreadable


def delete(data_dir: Path, run_id: str) -> None:
    _path(data_dir, run_id).unlink(missing_ok=True)
