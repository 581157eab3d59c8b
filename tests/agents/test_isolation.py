"""Run isolation: the pure rules (agents.isolation) by table, and a real sandboxed process
(agents.executors.sandbox, agents.landlock) refused everything but its own files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePath

import pytest

from sortie.agents import isolation as iso
from sortie.agents import landlock
from sortie.agents.executors import AttemptFiles
from sortie.agents.executors.sandbox import Isolation, prepare_spawn, run_base_env

PATHS = iso.SandboxPaths(
    workdir=PurePath("/d/agent/runs/r1/1"),
    run_dir=PurePath("/d/agent/runs/r1"),
    scratch=PurePath("/d/agent/runs/r1/1.tmp"),
    metrics_file=PurePath("/d/agent/runs/r1/1.metrics"),
    runtime_dir=PurePath("/d/agent/runtime"),
    interpreter_roots=(PurePath("/venv"),),
)


@pytest.mark.parametrize(
    ("abi", "has", "lacks"),
    [
        (0, 0, iso.EXECUTE),
        (1, iso.EXECUTE | iso.MAKE_SYM, iso.REFER | iso.TRUNCATE),
        (3, iso.REFER | iso.TRUNCATE, iso.IOCTL_DEV),
        (7, iso.IOCTL_DEV | iso.READ_DIR, 1 << 16),
    ],
)
def test_handled_access_follows_the_abi(abi: int, has: int, lacks: int) -> None:
    assert iso.handled_access(abi) & has == has
    assert not iso.handled_access(abi) & lacks


def test_scopes_from_abi_6() -> None:
    assert iso.scopes(5) == 0
    assert iso.scopes(6) == iso.SCOPE_SIGNAL | iso.SCOPE_ABSTRACT_UNIX_SOCKET


def test_rules_write_only_the_runs_own_places() -> None:
    rules = {r.path: r.rights for r in iso.sandbox_rules(PATHS)}
    writable = {p for p, rights in rules.items() if rights & (iso.WRITE_FILE | iso.MAKE_REG)}
    assert writable == {
        "/proc",
        "/dev",
        "/dev/shm",
        "/d/agent/runs/r1/1",
        "/d/agent/runs/r1/1.tmp",
        "/d/agent/runs/r1/1.metrics",
    }
    assert rules["/d/agent/runs/r1"] == iso.READ  # stop reason, hostfile
    assert rules["/venv"] == iso.READ_EXEC
    # nothing else of the data dir, and no home (client profile) is named
    assert not [p for p in rules if p in ("/d", "/d/agent", "/root", "/home", "/tmp")]


def test_a_file_rule_keeps_only_file_rights() -> None:
    rule = iso.PathRule("/x", iso.WRITE_TREE)
    assert rule.access(is_dir=False) == iso.WRITE_TREE & iso.FILE_RIGHTS
    assert rule.access(is_dir=True) == iso.WRITE_TREE


def test_interpreter_roots() -> None:
    venv = iso.interpreter_roots(
        PurePath("/v/bin/python"), PurePath("/opt/py/bin/python3.11"), PurePath("/opt/py/bin")
    )
    assert venv == (PurePath("/v"), PurePath("/opt/py"))
    plain = iso.interpreter_roots(
        PurePath("/usr/bin/python3"), PurePath("/usr/bin/python3.11"), None
    )
    assert plain == (PurePath("/usr"),)


def test_sorties_variables_are_not_inherited() -> None:
    env = iso.inherited_env(
        {
            "PATH": "/usr/bin",
            "SORTIE_CREDS": "/d/agent/agent.creds",
            "SORTIE_PROFILE": "p",
            "NATS_URL": "nats://x",
            "DOCKER_HOST": "unix:///run/podman.sock",
            "LANG": "C",
        }
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C"}


@pytest.mark.parametrize(
    ("as_user", "landlock_on", "mode"),
    [
        (True, True, "user+landlock"),
        (True, False, "user"),
        (False, True, "landlock"),
        (False, False, "none"),
    ],
)
def test_isolation_mode(as_user: bool, landlock_on: bool, mode: str) -> None:
    assert iso.isolation_mode(as_user=as_user, landlock=landlock_on) == mode


@pytest.mark.parametrize("bad", ["", "200000", "a-b", "5-1", "0-10", "300-200"])
def test_uid_range_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(iso.UidRangeError, match="FIRST"):
        iso.parse_uid_range(bad)


def test_uid_range_and_free_uid() -> None:
    pool = iso.parse_uid_range("200000-200002")
    assert list(pool) == [200000, 200001, 200002]
    assert iso.free_uid(pool, [200000]) == 200001
    assert iso.free_uid(pool, pool) is None


needs_landlock = pytest.mark.skipif(
    landlock.abi_version() < 1, reason="this kernel has no Landlock"
)


@needs_landlock
def test_a_confined_process_reaches_only_its_own_files(tmp_path: Path) -> None:
    """A real child confined as the agent confines a run: it writes its workdir and private
    tmp, reads its run dir; the data dir's secrets, another run and the home are refused."""
    data = tmp_path / "data"
    (data / "auth").mkdir(parents=True)
    (data / "auth" / "operator.nk").write_text("SEED")
    other = data / "runs" / "r0" / "1"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("other run")
    here = data / "runs" / "r1"
    workdir = here / "1"
    workdir.mkdir(parents=True)
    (data / "runtime").mkdir()
    files = AttemptFiles(
        workdir=workdir,
        runtime_dir=data / "runtime",
        metrics=here / "1.metrics",
        stop_reason=here / "1.stop-reason",
        hostfile=here / "1.hostfile",
        pid_file=here / "1.pid",
    )
    (here / "1.hostfile").write_text("localhost slots=1\n")
    isolation = Isolation(landlock_abi=landlock.abi_version())
    spawn = prepare_spawn(isolation, files, sys.executable)
    script = (
        "import os, sys\n"
        "def tryit(what, f):\n"
        "    try:\n"
        "        f(); print(what, 'ALLOWED')\n"
        "    except OSError as e:\n"
        "        print(what, 'refused', e.errno)\n"
        f"tryit('key', lambda: open({str(data / 'auth' / 'operator.nk')!r}).read())\n"
        f"tryit('other', lambda: open({str(other / 'secret.txt')!r}).read())\n"
        f"tryit('outside', lambda: open({str(tmp_path / 'x')!r}, 'w'))\n"
        "tryit('home', lambda: os.listdir(os.path.expanduser('~root')))\n"
        "open('outputs.txt', 'w').write('ok')\n"
        "open(os.path.join(os.environ['TMPDIR'], 't'), 'w').write('ok')\n"
        f"print(open({str(here / '1.hostfile')!r}).read().strip())\n"
    )
    env = run_base_env(isolation, files)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=spawn.preexec,
            check=False,
        )
    finally:
        spawn.release()
    assert proc.returncode == 0, proc.stderr
    assert "ALLOWED" not in proc.stdout, proc.stdout
    assert proc.stdout.count("refused") == 4
    assert "localhost slots=1" in proc.stdout
    assert (workdir / "outputs.txt").read_text() == "ok"
    assert env["TMPDIR"] == env["HOME"] == str(workdir.with_name("1.tmp"))
    assert "SORTIE_CREDS" not in env


def test_shared_dirs_are_writable_by_every_run() -> None:
    import dataclasses

    shared = dataclasses.replace(PATHS, shared_dirs=(PurePath("/data/ckpt"),))
    rules = {r.path: r.rights for r in iso.sandbox_rules(shared)}
    assert rules["/data/ckpt"] == iso.WRITE_TREE
    assert "/data/ckpt" not in {r.path for r in iso.sandbox_rules(PATHS)}


def test_a_uid_range_gives_each_running_run_its_own_uid() -> None:
    from sortie.agents.executors import ExecutorError

    pool = Isolation(uids=(200000, 200001), shared_uid=False)
    first, second = pool.take_uid(), pool.take_uid()
    assert {first, second} == {200000, 200001}
    with pytest.raises(ExecutorError, match="larger range"):
        pool.take_uid()
    pool.give_uid(first)
    assert pool.take_uid() == first
    shared = Isolation(uids=(999,))
    assert shared.take_uid() == shared.take_uid() == 999
    assert Isolation().take_uid() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="starts runs as other users: needs root")
def test_runs_from_a_uid_range_own_their_dirs_and_not_each_others(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    (root / "runtime").mkdir(parents=True)
    root.chmod(0o711)
    pool = Isolation(uids=(200000, 200001), shared_uid=False, landlock_abi=0)  # uids alone

    def files(run: str) -> AttemptFiles:
        here = root / "runs" / run
        (here / "1").mkdir(parents=True)
        (root / "runs").chmod(0o711)
        return AttemptFiles(
            workdir=here / "1",
            runtime_dir=root / "runtime",
            metrics=here / "1.metrics",
            stop_reason=here / "1.stop-reason",
            hostfile=here / "1.hostfile",
            pid_file=here / "1.pid",
        )

    a, b = files("a"), files("b")
    (a.workdir / "mine.txt").write_text("a's")
    spawn_a = prepare_spawn(pool, a, sys.executable)
    spawn_b = prepare_spawn(pool, b, sys.executable)
    try:
        assert a.workdir.stat().st_uid == spawn_a.user != spawn_b.user
        assert a.workdir.stat().st_mode & 0o777 == 0o700
        probe = f"import os; print(os.getuid()); open({str(a.workdir / 'mine.txt')!r}).read()"
        own = subprocess.run(
            [sys.executable, "-c", probe], cwd=a.workdir, preexec_fn=spawn_a.preexec,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        other = subprocess.run(
            [sys.executable, "-c", probe], cwd=b.workdir, preexec_fn=spawn_b.preexec,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        spawn_a.release()
        spawn_b.release()
    assert own.returncode == 0 and own.stdout.strip() == str(spawn_a.user), own.stderr
    assert other.returncode != 0 and "PermissionError" in other.stderr
    assert other.stdout.strip() == str(spawn_b.user)


@pytest.mark.skipif(os.geteuid() != 0, reason="the run user matters to a root agent only")
def test_a_root_agent_without_its_run_user_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sortie.cli", "--url", "nats://127.0.0.1:9", "agent",
         "--target", "local", "--run-user", "no-such-user-xyz",
         "--data-dir", str(tmp_path / "agent")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no-such-user-xyz" in proc.stderr and "useradd" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "sortie.cli", "--url", "nats://127.0.0.1:9", "agent",
         "--target", "local", "--run-uids", "5-1", "--data-dir", str(tmp_path / "agent2")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "FIRST must be" in bad.stderr, bad.stderr
