"""Attaching machines over SSH through the real CLI and SDK, against a real `sortie up` and sshd.

The "machine" is this host reached as the unprivileged user the test setup creates, through
an sshd the tests start on 127.0.0.1 with its own host key.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Installation, wait_until
from tests.e2e.conftest import installation as installation  # the fixture, shared
from tests.ssh.conftest import SSH_TEST_PASSWORD, SSH_TEST_USER, ClientKey, Sshd, get_test_user

HOME = Path(get_test_user().pw_dir) if os.geteuid() == 0 else Path("/home/sortie-test")


def key_file(tmp_path: Path, key: ClientKey) -> Path:
    path = tmp_path / "id_test"
    path.write_text(key.text)
    path.chmod(0o600)
    return path


def attach_args(name: str, sshd: Sshd, known_hosts: Path, *extra: str) -> list[str]:
    return [
        "compute",
        "attach",
        name,
        "--type",
        "vm",
        "--address",
        sshd.host,
        "--ssh-port",
        str(sshd.port),
        "--username",
        SSH_TEST_USER,
        "--known-hosts",
        str(known_hosts),
        *extra,
    ]


def show(inst: Installation, name: str) -> dict:
    out = inst.json("compute", "show", name)
    assert isinstance(out, dict)
    return out


def detach(inst: Installation, name: str, *extra: str) -> None:
    inst.cli("compute", "detach", name, *extra, check=True)
    wait_until(lambda: name not in [c["name"] for c in inst.json("compute", "list")], timeout=60)


def stored_values(inst: Installation) -> bytes:
    """Every value in every KV bucket, raw (to look for secrets)."""
    import asyncio

    from sortie.bus.connection import BusAuth, open_bus
    from sortie.bus.kv import kv_items

    async def dump() -> bytes:
        bus = await open_bus(inst.url, "test-dump", auth=BusAuth(creds=inst.scheduler_creds))
        try:
            out = b""
            for kv in (bus.runs, bus.agents, bus.computes, bus.nodes, bus.vms):
                out += b"".join(e.value or b"" for e in await kv_items(kv))
            return out
        finally:
            await bus.close()

    return asyncio.run(dump())


def files_holding(root: Path, needle: bytes, skip: Path | None = None) -> list[str]:
    """Files under ``root`` (but not under ``skip``) whose bytes contain ``needle``."""
    hits = []
    for d, _, names in os.walk(root):
        if skip is not None and Path(d).is_relative_to(skip):
            continue
        for name in names:
            path = Path(d) / name
            with contextlib.suppress(OSError):
                if not path.is_symlink() and needle in path.read_bytes():
                    hits.append(str(path))
    return hits


def test_attach_with_a_key_run_survive_a_dropped_link_and_detach(
    installation: Installation,
    sshd: Sshd,
    known_hosts: Path,
    client_key: ClientKey,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    proc = installation.cli(
        *attach_args("lab-box", sshd, known_hosts, "--private-key-file", str(key)), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "[lab-box] agent started" in proc.stderr and "wheels" in proc.stderr
    vm = show(installation, "lab-box")
    assert vm["provisioning_state"] == "Succeeded" and vm["link"] == "connected"
    assert vm["auth"] == "key" and vm["username"] == SSH_TEST_USER

    src = tmp_path / "job"
    src.mkdir()
    (src / "job.py").write_text(
        "import getpass, os, time\nprint('running as', getpass.getuser(), flush=True)\n"
        "time.sleep(6)\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/result.txt', 'w').write('done on the vm')\nprint('finished', flush=True)\n"
    )
    sub = installation.json("run", "submit", str(src), "--script", "job.py", "--target", "lab-box")
    assert isinstance(sub, dict)
    run_id = sub["run_id"]
    wait_until(lambda: "running as" in installation.cli("run", "logs", run_id).stdout, timeout=60)
    # the SSH connection carrying the broker is cut mid-run; the scheduler restores it
    assert sshd.kill_sessions() >= 1
    wait_until(
        lambda: (
            show(installation, "lab-box")["link"] == "reconnecting"
            or "ssh link reconnecting" in show(installation, "lab-box")["progress"]
        ),
        timeout=30,
    )
    wait_until(lambda: show(installation, "lab-box")["link"] == "connected", timeout=60)
    done = installation.cli("run", "wait", run_id, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Completed" and shown["attempt"] == 1  # the run was not lost
    assert shown["artifacts"] == ["outputs/result.txt"]
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert f"running as {SSH_TEST_USER}" in logs and "finished" in logs
    out = tmp_path / "out"
    installation.cli("run", "download", run_id, str(out), check=True)
    assert (out / run_id / "outputs" / "result.txt").read_text() == "done on the vm"

    # secrets stay on the scheduler's host: not in the store, `show`, or the daemon log
    secret_line = client_key.text.splitlines()[1]
    assert secret_line.encode() not in stored_values(installation)
    assert secret_line not in json.dumps(vm) and secret_line not in installation.log.read_text()
    secrets = installation.data_dir / "scheduler" / "secrets"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    assert oct((secrets / "lab-box.json").stat().st_mode & 0o777) == "0o600"

    assert (HOME / ".sortie").is_dir()
    detach(installation, "lab-box")
    assert not (HOME / ".sortie").exists(), "detach removes what was installed"
    assert not (secrets / "lab-box.json").exists()


def test_password_attach_from_env_and_stdin_and_sdk(
    installation: Installation,
    sshd: Sshd,
    known_hosts: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = SSH_TEST_PASSWORD.encode()
    proc = installation.cli(
        *attach_args("pw-box", sshd, known_hosts, "--password-env", "PW"),
        env={"PW": SSH_TEST_PASSWORD},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert show(installation, "pw-box")["auth"] == "password"
    assert SSH_TEST_PASSWORD not in proc.stdout + proc.stderr
    # Attached, the password is kept on the scheduler's host (owner-only, checked in the key
    # test) and nowhere else: not in the store, any view of the machine, the daemons' log,
    # or any other file of the installation.
    secrets_dir = installation.data_dir / "scheduler" / "secrets"
    assert password in (secrets_dir / "pw-box.json").read_bytes()
    for view in (
        ("compute", "show", "pw-box"),
        ("compute", "list"),
        ("compute", "list", "--output", "json"),
        ("agent", "list", "--output", "json"),
        ("status", "--output", "json"),
    ):
        out = installation.cli(*view, check=True)
        assert SSH_TEST_PASSWORD not in out.stdout + out.stderr, view
    assert password not in stored_values(installation)
    assert SSH_TEST_PASSWORD not in installation.log.read_text()
    root = installation.data_dir.parent
    assert files_holding(root, password, skip=secrets_dir) == []
    detach(installation, "pw-box", "--keep-files")
    assert (HOME / ".sortie").is_dir(), "--keep-files keeps the install"
    # ... nor on the machine: what was installed there, its agent's files and log
    assert files_holding(HOME / ".sortie", password) == []

    proc = installation.cli(
        *attach_args("pw-stdin", sshd, known_hosts, "--password-stdin"),
        input=SSH_TEST_PASSWORD + "\n",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    detach(installation, "pw-stdin")

    from sortie import ComputeTarget, RemoteCompute, Workspace

    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    with Workspace.connect() as ws:
        config = RemoteCompute.attach_configuration(
            address=sshd.host,
            ssh_port=sshd.port,
            username=SSH_TEST_USER,
            password=SSH_TEST_PASSWORD,
            known_hosts=str(known_hosts),
        )
        target = ComputeTarget.attach(ws, "sdk-box", config)
        assert target.wait_for_completion(show_output=True) == "Succeeded"
        assert target.get_status()["link"] == "connected"
        target.detach()
    wait_until(
        lambda: "sdk-box" not in [c["name"] for c in installation.json("compute", "list")],
        timeout=60,
    )
    shown = capsys.readouterr()
    assert SSH_TEST_PASSWORD not in shown.out + shown.err + repr(config)
    # detached: the scheduler's copies are gone too, and no other file ever held it
    for name in ("pw-box", "pw-stdin", "sdk-box"):
        assert not (secrets_dir / f"{name}.json").exists()
    assert files_holding(root, password, skip=secrets_dir) == []
    assert SSH_TEST_PASSWORD not in installation.log.read_text()


def test_host_key_and_credential_failures_are_clear(
    installation: Installation,
    sshd: Sshd,
    client_key: ClientKey,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # unknown host: refused without the flag, with the fingerprint and what to do
    proc = installation.cli(
        *attach_args("new-host", sshd, empty, "--private-key-file", str(key)), timeout=300
    )
    assert proc.returncode == 1
    err = show(installation, "new-host")["provisioning_errors"][0]
    assert err["code"] == "host_key_unknown"
    assert "SHA256:" in err["message"] and "--trust-new-host-key" in err["message"]
    assert empty.read_text() == ""
    detach(installation, "new-host")
    # with the flag it is accepted and recorded
    proc = installation.cli(
        *attach_args(
            "new-host", sshd, empty, "--private-key-file", str(key), "--trust-new-host-key"
        ),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"[{sshd.host}]:{sshd.port}" in empty.read_text()
    detach(installation, "new-host")

    # a changed host key is refused with both fingerprints
    sshd.restart(new_host_key=True)
    proc = installation.cli(
        *attach_args(
            "changed", sshd, empty, "--private-key-file", str(key), "--trust-new-host-key"
        ),
        timeout=300,
    )
    assert proc.returncode == 1
    err = show(installation, "changed")["provisioning_errors"][0]
    assert err["code"] == "host_key_changed"
    assert err["message"].count("SHA256:") >= 2 and "ssh-keygen -R" in err["message"]
    detach(installation, "changed")

    trusted = tmp_path / "trusted"
    trusted.write_text(sshd.known_hosts_line())
    # wrong password: says so, and never shows it
    proc = installation.cli(
        *attach_args("bad-pw", sshd, trusted, "--password-env", "PW"),
        env={"PW": "not-the-password-42"},
        timeout=300,
    )
    assert proc.returncode == 1
    err = show(installation, "bad-pw")["provisioning_errors"][0]
    assert err["code"] == "auth_failed" and SSH_TEST_USER in err["message"]
    assert "not-the-password-42" not in json.dumps(show(installation, "bad-pw"))
    assert "not-the-password-42" not in installation.log.read_text()
    detach(installation, "bad-pw")

    # unreachable: names the address
    closed = sshd.port + 1 if sshd.port < 65000 else sshd.port - 1
    proc = installation.cli(
        "compute",
        "attach",
        "gone",
        "--address",
        "127.0.0.1",
        "--ssh-port",
        str(closed),
        "--username",
        SSH_TEST_USER,
        "--known-hosts",
        str(trusted),
        "--private-key-file",
        str(key),
        timeout=300,
    )
    assert proc.returncode == 1
    err = show(installation, "gone")["provisioning_errors"][0]
    assert err["code"] == "unreachable" and f"127.0.0.1:{closed}" in err["message"]
    detach(installation, "gone")

    # secrets are never taken from the command line
    refused = installation.cli(*attach_args("no-creds", sshd, trusted))
    assert refused.returncode == 2 and "never taken from the command line" in refused.stderr


def test_ssh_pool_cluster_scales_up_and_down(
    installation: Installation,
    sshd: Sshd,
    client_key: ClientKey,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    known = tmp_path / "pool_known_hosts"
    line = sshd.known_hosts_line()
    known.write_text(line + line.replace(f"[{sshd.host}]", "[localhost]"))
    made = installation.json(
        "compute",
        "create",
        "ssh-pool",
        "--vm-size",
        "local_small",
        "--max-nodes",
        "2",
        "--idle-seconds-before-scaledown",
        "3",
        "--provider",
        "ssh",
        "--hosts",
        f"{sshd.host},localhost",
        "--ssh-port",
        str(sshd.port),
        "--username",
        SSH_TEST_USER,
        "--private-key-file",
        str(key),
        "--known-hosts",
        str(known),
    )
    assert isinstance(made, dict) and made["provider"] == "ssh"
    src = tmp_path / "work"
    src.mkdir()
    (src / "w.py").write_text(
        "import getpass, time\nprint('on', getpass.getuser(), flush=True)\ntime.sleep(3)\n"
    )
    runs = [
        installation.json("run", "submit", str(src), "--script", "w.py", "--target", "ssh-pool")[
            "run_id"
        ]
        for _ in range(2)
    ]
    peak = wait_until(
        lambda: (c := show(installation, "ssh-pool"))["nodes"]["current"] == 2 and c, timeout=120
    )
    assert peak["decisions"][0]["action"] == "scale_up"
    for run_id in runs:
        done = installation.cli("run", "wait", run_id, timeout=180)
        assert done.returncode == 0, done.stderr
        assert f"on {SSH_TEST_USER}" in installation.cli("run", "logs", run_id).stdout
    idle = wait_until(
        lambda: (c := show(installation, "ssh-pool"))["nodes"]["current"] == 0 and c, timeout=90
    )
    assert idle["decisions"][-1]["action"] == "scale_down"
    time.sleep(1)
    assert not list(HOME.glob(".sortie-ssh-pool-*")), "stopped nodes leave nothing installed"
    installation.json("compute", "delete", "ssh-pool")


def test_passphrase_key_and_a_scheduler_restart_restores_the_link(
    sshd: Sshd, known_hosts: Path, protected_key: ClientKey, tmp_path: Path
) -> None:
    from sortie.bus.broker import free_port
    from tests.e2e.conftest import start_up, stop_up
    from tests.ssh.conftest import KEY_PASSPHRASE

    env = dict(os.environ, SORTIE_PROFILE=str(tmp_path / "profile.json"))
    env.pop("SORTIE_URL", None)
    port, data = free_port(), tmp_path / "data"
    proc = start_up(data, port, env, tmp_path / "up.log")
    inst = Installation(
        url=f"nats://127.0.0.1:{port}",
        data_dir=data,
        env=env,
        process=proc,
        log=tmp_path / "up.log",
    )
    try:
        key = key_file(tmp_path, protected_key)
        attached = inst.cli(
            *attach_args(
                "key-box", sshd, known_hosts, "--private-key-file", str(key), "--passphrase-stdin"
            ),
            input=KEY_PASSPHRASE + "\n",
            timeout=300,
        )
        assert attached.returncode == 0, attached.stderr
        before = show(inst, "key-box")
        assert stop_up(proc) == 0
        proc = start_up(data, port, env, tmp_path / "up2.log")
        inst.process = proc
        after = wait_until(
            lambda: (c := show(inst, "key-box"))["link"] == "connected" and c, timeout=60
        )
        assert after["provisioning_state"] == "Succeeded"
        src = tmp_path / "src"
        src.mkdir()
        (src / "t.py").write_text("print('after the restart')\n")
        done = inst.cli(
            "run",
            "submit",
            str(src),
            "--script",
            "t.py",
            "--target",
            "key-box",
            "--wait",
            timeout=120,
        )
        assert done.returncode == 0 and "after the restart" in done.stdout, done.stderr
        assert before["auth"] == "key"
        detach(inst, "key-box")
    finally:
        stop_up(proc)


def test_advertised_url_skips_the_reverse_forward(
    installation: Installation,
    sshd: Sshd,
    known_hosts: Path,
    client_key: ClientKey,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    proc = installation.cli(
        *attach_args(
            "direct",
            sshd,
            known_hosts,
            "--private-key-file",
            str(key),
            "--advertised-url",
            installation.url,
        ),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    vm = show(installation, "direct")
    assert vm["advertised_url"] == installation.url
    assert not any("reverse port forward" in line for line in vm["progress"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print('direct to the broker')\n")
    done = installation.cli(
        "run", "submit", str(src), "--script", "t.py", "--target", "direct", "--wait", timeout=120
    )
    assert done.returncode == 0 and "direct to the broker" in done.stdout, done.stderr
    detach(installation, "direct")
