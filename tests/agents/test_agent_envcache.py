"""The environment cache, building real venvs with uv."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from sortie.agents.envcache import EnvCache, EnvError, env_hash
from sortie.proto import messages as m


def pip_env(*pkgs: str) -> m.PythonEnvironment:
    return m.PythonEnvironment(user_managed=False, pip=list(pkgs))


async def test_user_managed(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    got = await cache.prepare(m.PythonEnvironment(), lambda _: None)
    assert got.python == sys.executable and got.hash is None
    with pytest.raises(EnvError, match=r"/nope/python.*does not exist"):
        await cache.prepare(m.PythonEnvironment(interpreter="/nope/python"), lambda _: None)
    assert (cache.hits, cache.misses) == (0, 0)


async def test_builds_once_then_hits(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    lines: list[str] = []
    env = pip_env("six")
    first = await cache.prepare(env, lines.append)
    assert not first.cached and first.hash == env_hash(env)
    assert any("building environment" in line for line in lines)
    out = subprocess.run(
        [first.python, "-c", "import six; print(six.__name__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "six"
    second = await cache.prepare(pip_env(" six "), lines.append)
    assert second.cached and second.python == first.python
    assert (cache.hits, cache.misses) == (1, 1)
    assert "using cached environment" in lines[-1]
    # another cache object (as after an agent restart) sees it ready
    again = EnvCache(tmp_path / "envs")
    assert (await again.prepare(env, lambda _: None)).cached


async def test_concurrent_requests_build_once(tmp_path: Path) -> None:
    caches = [EnvCache(tmp_path / "envs"), EnvCache(tmp_path / "envs")]  # two "processes"
    logs: list[list[str]] = [[], [], []]
    env = pip_env("six")
    results = await asyncio.gather(
        caches[0].prepare(env, logs[0].append),
        caches[0].prepare(env, logs[1].append),
        caches[1].prepare(env, logs[2].append),
    )
    assert len({r.python for r in results}) == 1
    assert sum(c.misses for c in caches) == 1
    assert sum(c.hits for c in caches) == 2
    assert sum(any("building environment" in x for x in lg) for lg in logs) == 1


async def test_runs_waiting_on_a_build_start_while_the_first_run_holds_the_environment(
    tmp_path: Path,
) -> None:
    """Three trials of a sweep reach a fresh agent at once (two cache objects: two
    processes): one builds, then runs, holding its shared lock on the environment for as long
    as it runs; the others, which waited on the build, use the environment too, rather than
    waiting for an exclusive lock that the running one's shared lock keeps from them."""
    caches = [EnvCache(tmp_path / "envs"), EnvCache(tmp_path / "envs")]
    env = pip_env("six")
    held = await asyncio.gather(
        caches[0].prepare_held(env, lambda _: None),
        caches[0].prepare_held(env, lambda _: None),
        caches[1].prepare_held(env, lambda _: None),
    )
    try:
        assert len({got.python for got, _ in held}) == 1
        assert [got.cached for got, _ in held].count(False) == 1
        assert all(hold is not None for _, hold in held)
    finally:
        for _, hold in held:
            if hold is not None:
                hold.close()


async def test_empty_pip_list_builds_bare_venv(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    got = await cache.prepare(pip_env(), lambda _: None)
    assert Path(got.python).exists()


async def test_failed_build_reports_output_and_leaves_nothing(tmp_path: Path) -> None:
    cache = EnvCache(tmp_path / "envs")
    env = pip_env("sortie-no-such-package-zzzqqq")
    lines: list[str] = []
    with pytest.raises(EnvError) as info:
        await cache.prepare(env, lines.append)
    message = str(info.value)
    assert "environment build failed" in message
    assert "sortie-no-such-package-zzzqqq" in message  # uv's own explanation is in the tail
    assert not cache.env_dir(env_hash(env)).exists()
    assert lines  # the build output went to the run's log


async def test_conda_without_conda_installs_from_pypi_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no conda, no micromamba
    cache = EnvCache(tmp_path / "envs")
    env = m.PythonEnvironment(user_managed=False, conda=["six"], channels=["conda-forge"])
    lines: list[str] = []
    got = await cache.prepare(env, lines.append)
    assert "no conda on this host: installing conda packages six from PyPI with uv" in lines
    assert got.hash == env_hash(env, conda_from="pypi") != env_hash(env)
    import subprocess

    out = subprocess.run([got.python, "-c", "import six; print(six.__name__)"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "six"


async def test_conda_package_not_on_pypi_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no conda, no micromamba
    cache = EnvCache(tmp_path / "envs")
    env = m.PythonEnvironment(
        user_managed=False, pip=["six"], conda=["sortie-no-such-conda-pkg-zzq=1.0"]
    )
    with pytest.raises(EnvError) as info:
        await cache.prepare(env, lambda _: None)
    assert str(info.value).startswith(
        "conda package sortie-no-such-conda-pkg-zzq=1.0 was not found on PyPI"
    )
    assert not cache.env_dir(env_hash(env, conda_from="pypi")).exists()
