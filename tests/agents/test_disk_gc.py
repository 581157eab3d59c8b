"""An agent's disk garbage collection on real files (agents.disk_gc): the environment cache
least recently used first by size, never one a run holds; finished run directories."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sortie.agents.disk_gc import collect_envs, collect_run_dirs, scan_envs
from sortie.agents.envcache import READY, EnvCache, env_hash
from sortie.proto import messages as m


def _fake_env(root: Path, key: str, size: int, last_used: float) -> None:
    env = root / key
    (env / "lib").mkdir(parents=True)
    (env / "lib" / "blob").write_bytes(b"x" * size)
    (env / READY).write_text("")
    os.utime(env / READY, (last_used, last_used))


async def test_env_cache_evicts_least_recently_used_by_size_never_a_held_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "envs"
    cache = EnvCache(root)
    bare = m.PythonEnvironment(user_managed=False, pip=[])
    env, hold = await cache.prepare_held(bare, lambda _: None)  # a real venv, held by a "run"
    assert hold is not None and env.hash is not None
    real_key = cache.env_dir(env.hash).name
    _fake_env(root, "old0000000000000", 30_000, last_used=1_000.0)
    _fake_env(root, "mid0000000000000", 30_000, last_used=2_000.0)
    sizes = {e.key: e.size for e in scan_envs(root)}
    assert set(sizes) == {real_key, "old0000000000000", "mid0000000000000"}

    # room for everything but one fake: the least recently used goes
    fits = sizes[real_key] + 30_000 + 100
    assert [e.key for e in collect_envs(root, fits, dry_run=True)] == ["old0000000000000"]
    assert (root / "old0000000000000").is_dir()  # a dry run deletes nothing
    assert [e.key for e in collect_envs(root, fits)] == ["old0000000000000"]
    assert not (root / "old0000000000000").exists()

    # no room at all: the held one stays, the other goes
    assert [e.key for e in collect_envs(root, 0)] == ["mid0000000000000"]
    assert cache.is_ready(env.hash)
    # once the run let go, it can go too, and the next run builds it again
    hold.close()
    assert [e.key for e in collect_envs(root, 0)] == [real_key]
    assert not cache.is_ready(env_hash(bare))
    again, hold2 = await cache.prepare_held(bare, lambda _: None)
    assert not again.cached and hold2 is not None
    assert Path(again.python).exists()
    hold2.close()


def test_finished_run_dirs_go_after_the_keep_time(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run_id in ("done", "running", "unreported", "recent"):
        (runs / run_id / "1" / "outputs").mkdir(parents=True)
        (runs / run_id / "1" / "outputs" / "f").write_bytes(b"y" * 100)
    (runs / "unreported" / "1.exit").write_text("0")
    old = time.time() - 7200
    for run_id in ("done", "running", "unreported"):
        for p in [runs / run_id, *(runs / run_id).iterdir()]:
            os.utime(p, (old, old))
    now = time.time()
    # "recent" changed just now: it stays although its run is over; "running" is not over;
    # "unreported" has an exit the agent has not reported yet
    gone = collect_run_dirs(runs, now, 3600, lambda r: r != "running", dry_run=True)
    assert [d.run_id for d in gone] == ["done"]
    assert (runs / "done").is_dir()
    gone = collect_run_dirs(runs, now, 3600, lambda r: r != "running")
    assert [d.run_id for d in gone] == ["done"] and gone[0].size == 100
    assert sorted(p.name for p in runs.iterdir()) == ["recent", "running", "unreported"]
