"""What an agent's disk lets go of (agents.gc_plan), by table."""

from __future__ import annotations

import pytest

from sortie.agents.gc_plan import EnvEntry, RunDir, envs_to_evict, run_dirs_to_remove

NOW = 100_000.0
KEEP = 3600.0


def _dir(run_id: str, age: float, *, held: bool = False, ended: bool = True) -> RunDir:
    return RunDir(run_id=run_id, changed_at=NOW - age, held=held, ended=ended)


@pytest.mark.parametrize(
    ("dirs", "gone"),
    [
        ([], []),
        # ended and old: goes; exactly at the keep time counts as old
        ([_dir("a", KEEP + 1), _dir("b", KEEP)], ["a", "b"]),
        # too recent, still held (running or its exit unreported), or its run not over: stays
        ([_dir("a", KEEP - 1), _dir("b", 10 * KEEP, held=True)], []),
        ([_dir("c", 10 * KEEP, ended=False)], []),
        # oldest first
        ([_dir("new", KEEP + 5), _dir("old", KEEP + 50)], ["old", "new"]),
    ],
)
def test_run_dirs_to_remove(dirs: list[RunDir], gone: list[str]) -> None:
    assert [d.run_id for d in run_dirs_to_remove(dirs, NOW, KEEP)] == gone


def _env(key: str, size: int, last_used: float, *, in_use: bool = False) -> EnvEntry:
    return EnvEntry(key=key, size=size, last_used=last_used, in_use=in_use)


@pytest.mark.parametrize(
    ("entries", "max_bytes", "evicted"),
    [
        ([], 0, []),
        # fits: nothing goes
        ([_env("a", 5, 1), _env("b", 5, 2)], 10, []),
        # least recently used first, only until it fits
        ([_env("a", 5, 3), _env("b", 5, 1), _env("c", 5, 2)], 10, ["b"]),
        ([_env("a", 5, 3), _env("b", 5, 1), _env("c", 5, 2)], 5, ["b", "c"]),
        # one in use is never evicted, and still counts
        ([_env("a", 8, 1, in_use=True), _env("b", 5, 2), _env("c", 1, 3)], 9, ["b"]),
        ([_env("a", 20, 1, in_use=True), _env("b", 5, 2)], 10, ["b"]),
    ],
)
def test_envs_to_evict(entries: list[EnvEntry], max_bytes: int, evicted: list[str]) -> None:
    assert [e.key for e in envs_to_evict(entries, max_bytes)] == evicted
