"""A hostile script submitted to a real `sortie up` owns nothing (issue I, item 1).

Two installations: `sortie up` as root (each run starts as the unprivileged ``sortie-run``,
inside a Landlock domain of its own) and `sortie up` as the unprivileged ``sortie-test``
(runs as the same user, confined by Landlock alone). In each, a victim run holding a secret
variable sleeps while a hostile run tries to read every credential, key and config of the
installation, the client profile, the victim's run-secrets file and ``/proc/PID/environ``, and
to write outside its working directory. It prints what it could do. Every attempt must be
refused, and the hostile run must still work as a run: its log, its metric and its outputs.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.agents import landlock
from sortie.bus.broker import free_port
from tests.e2e.conftest import SORTIE, Installation, isolated_env, stop_up, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: starts sortie up as two users"),
]
needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="no Landlock here")
RUN_TIMEOUT = pytest.mark.timeout(600)
OUTSIDE = Path(f"/tmp/sortie-hostile-{secrets.token_hex(6)}")  # no run may create it

VICTIM = """\
import os, time
print("victim holds its secret", flush=True)
time.sleep(float(os.environ.get("HOLD_S", "120")))
"""

HOSTILE = r"""
import json, os, sys
from sortie import Run

paths = json.load(open("targets.json"))
got = []  # what the script could do: each entry is a breach
tried = 0

def attempt(what, fn):
    global tried
    tried += 1
    try:
        fn()
        got.append(what)
    except OSError:
        pass

for p in paths["read"]:
    attempt("read " + p, lambda p=p: open(p, "rb").read())
for d in paths["list"]:
    attempt("list " + d, lambda d=d: os.listdir(d))
for p in paths["write"]:
    attempt("write " + p, lambda p=p: open(p, "w").write("owned"))
victims = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"victim.py" in open(f"/proc/{pid}/cmdline", "rb").read():
                victims.append(pid)
        except OSError:
            pass
for pid in victims:
    attempt("environ of " + pid, lambda pid=pid: open(f"/proc/{pid}/environ", "rb").read())
    attempt("signal " + pid, lambda pid=pid: os.kill(int(pid), 0))
leaked = [k for k in os.environ if k.startswith(("SORTIE_CREDS", "SORTIE_PROFILE", "NATS_"))]
got += [f"inherited {k}" for k in leaked]
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write("trained")
open(os.path.join(os.environ["TMPDIR"], "scratch"), "w").write("tmp is mine")
Run.get_context().log("accuracy", 0.75)
print("hostile report " + json.dumps(
    {"uid": os.getuid(), "tried": tried, "victims": victims, "breaches": got}
), flush=True)
"""


def _up_options(port: int) -> list[str]:
    return ["--port", str(port), "--no-fsync"]


def _start(root: Path, port: int, user: str | None) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = isolated_env(root)
    prefix: list[str] = []
    if user is not None:
        entry = pwd.getpwnam(user)
        shutil.chown(root, entry.pw_uid, entry.pw_gid)
        env["HOME"] = str(root)
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    log = root / "up.log"
    with open(log, "a") as fh:
        proc = subprocess.Popen(
            [*prefix, *SORTIE, "up", "--data-dir", str(root / "data"), *_up_options(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            cwd=root,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("Sortie ready at "):
        proc.kill()
        raise AssertionError(f"sortie up did not get ready: {line!r}\n{log.read_text()[-3000:]}")
    return proc, env


@pytest.fixture(scope="module", params=["root", "sortie-test"])
def up(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    user = None if request.param == "root" else request.param
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.fail(f"user {user} is missing: run tests/setup-system.sh as root")
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    port = free_port()
    proc, env = _start(root, port, user)
    inst = Installation(
        url=f"nats://127.0.0.1:{port}",
        data_dir=root / "data",
        env=env,
        process=proc,
        log=root / "up.log",
    )
    try:
        yield inst
    finally:
        stop_up(proc)


def _targets(inst: Installation, victim_run: str, workdir_parent: Path) -> dict[str, list[str]]:
    data = inst.data_dir
    secrets = sorted(str(p) for p in (data / "scheduler" / "run-secrets").glob("*.json"))
    assert any(victim_run in s for s in secrets), "the victim's secret file is there to try"
    reads = [
        data / "agent" / "agent.creds",
        *(data / "auth").iterdir(),
        *(p for p in (data / "nats").rglob("*") if p.is_file() and p.suffix == ".conf"),
        Path(inst.env["SORTIE_PROFILE"]),
    ]
    assert {p.name for p in reads} >= {
        "agent.creds",
        "scheduler.creds",
        "client.creds",
        "account.nk",
        "operator.nk",
        "system.nk",
        "broker.conf",
        "profile.json",
    }
    return {
        "read": [str(p) for p in reads] + secrets,
        "list": [str(data), str(data / "auth"), str(data / "agent" / "runs"), "/root"],
        "write": [
            str(data / "agent" / "planted"),
            str(data / "auth" / "planted"),
            str(workdir_parent / "planted"),
            str(OUTSIDE),
        ],
    }


@needs_landlock
@RUN_TIMEOUT
def test_a_hostile_run_is_refused_everything_but_its_own_work(
    up: Installation, tmp_path: Path
) -> None:
    inst = up
    victim_src = tmp_path / "victim"
    victim_src.mkdir()
    (victim_src / "victim.py").write_text(VICTIM)
    proc = inst.cli(
        "run", "submit", str(victim_src), "--script", "victim.py", "--python", sys.executable,
        "--secret-env", "VICTIM_SECRET", "--output", "json",
        env={"VICTIM_SECRET": "victim-secret-value"}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    victim = json.loads(proc.stdout.strip().splitlines()[0])["run_id"]
    wait_until(
        lambda: "victim holds its secret" in inst.cli("run", "logs", victim).stdout, timeout=120
    )
    runs_dir = inst.data_dir / "agent" / "runs"
    src = tmp_path / "hostile"
    src.mkdir()
    (src / "hostile.py").write_text(HOSTILE)
    (src / "targets.json").write_text(json.dumps(_targets(inst, victim, runs_dir / victim)))
    proc = inst.cli(
        "run", "submit", str(src), "--script", "hostile.py", "--python", sys.executable,
        "--wait", "--output", "json", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + inst.log.read_text()[-3000:]
    hostile = json.loads(proc.stdout.strip().splitlines()[0])["run_id"]
    logs = inst.cli("run", "logs", hostile, check=True).stdout
    line = next(ln for ln in logs.splitlines() if "hostile report " in ln)
    report = json.loads(line.split("hostile report ", 1)[1])
    assert report["breaches"] == [], report
    assert report["victims"], "the victim's process was found, and its environ tried"
    assert report["tried"] >= 17
    if os.geteuid() == 0 and inst.data_dir.stat().st_uid == 0:
        assert report["uid"] != 0  # sortie up as root: the run is not root
    for planted in (
        inst.data_dir / "agent" / "planted",
        inst.data_dir / "auth" / "planted",
        runs_dir / victim / "planted",
        OUTSIDE,
    ):
        assert not planted.exists()
    # and it is still a run: its outputs, metric and log
    shown = json.loads(inst.cli("run", "show", hostile, "--output", "json", check=True).stdout)
    assert shown["state"] == "Completed"
    assert "accuracy" in json.dumps(shown["metrics"])
    dest = tmp_path / "out"
    inst.cli("run", "download", hostile, str(dest), "--flat", check=True)
    assert (dest / "outputs" / "result.txt").read_text() == "trained"
    # the victim was never disturbed: it still runs, until canceled
    assert json.loads(inst.cli("run", "show", victim, "--output", "json").stdout)["state"] == (
        "Running"
    )
    # owner-only where a run has no business, passable (not listable) down to a run's own dir
    data = inst.data_dir
    modes = {
        p: p.stat().st_mode & 0o777
        for p in (
            data,
            data / "auth",
            data / "nats",
            data / "scheduler",
            data / "scheduler" / "run-secrets",
            data / "agent" / "agent.creds",
            data / "auth" / "scheduler.creds",
            data / "agent" / "blobs",
            runs_dir / victim / "1",
        )
    }
    assert modes[data] == 0o711 and modes[data / "auth"] == 0o700, modes
    assert modes[data / "nats"] == 0o700 and modes[data / "scheduler"] == 0o711, modes
    assert modes[data / "scheduler" / "run-secrets"] == 0o700, modes
    assert (
        modes[data / "agent" / "agent.creds"] == modes[data / "auth" / "scheduler.creds"] == 0o600
    )
    if data.stat().st_uid == 0:
        assert modes[data / "agent" / "blobs"] == 0o700, modes
        assert modes[runs_dir / victim / "1"] == 0o700, modes  # the victim's, as its user
        assert (runs_dir / victim / "1").stat().st_uid == pwd.getpwnam("sortie-run").pw_uid
    inst.cli("run", "cancel", victim, check=True)
    status = inst.json("status")
    assert isinstance(status, dict)
    assert {a["isolation"] for a in status["agents"]} == (
        {"user+landlock"} if inst.data_dir.stat().st_uid == 0 else {"landlock"}
    )
