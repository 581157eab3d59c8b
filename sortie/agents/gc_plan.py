"""What an agent's disk may let go of (pure): run directories and cached environments (the
directories under ``<data>/envs``, and environment images in the engine: ``image_cache.py``).

* A run directory goes once its run is over for this host (its outcome reported: no attempt
  held, no unreported exit) and nothing in it changed for ``keep_s``.
* Cached environments go least recently used first until the cache fits ``max_bytes``; one in
  use is never chosen (the shell also checks this under the environment's lock).

Times are passed in; nothing here reads a clock or the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RunDir:
    run_id: str
    changed_at: float  # the newest mtime in it (its top level)
    held: bool  # an attempt of it runs here, or its exit is not reported yet
    ended: bool  # its run is over (record terminal or gone; for the agent: not held)
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class EnvEntry:
    key: str  # the directory name under <data>/envs
    size: int
    last_used: float
    in_use: bool = False


def run_dirs_to_remove(dirs: Sequence[RunDir], now: float, keep_s: float) -> list[RunDir]:
    """Run directories that may go, oldest first."""
    gone = [d for d in dirs if d.ended and not d.held and now - d.changed_at >= keep_s]
    return sorted(gone, key=lambda d: (d.changed_at, d.run_id))


def envs_to_evict(entries: Sequence[EnvEntry], max_bytes: int) -> list[EnvEntry]:
    """Least recently used first, until what stays fits ``max_bytes`` (in-use ones stay, and
    count; if they alone are over, every other one goes)."""
    total = sum(e.size for e in entries)
    out: list[EnvEntry] = []
    for e in sorted(entries, key=lambda e: (e.last_used, e.key)):
        if total <= max_bytes:
            break
        if e.in_use:
            continue
        out.append(e)
        total -= e.size
    return out
