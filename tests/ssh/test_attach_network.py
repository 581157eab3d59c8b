"""Attached machines get the operator's network settings (``--agent-env``), and a host
without the SFTP subsystem is attached by copying over exec channels: a real `sortie up`,
a real sshd started without its ``Subsystem sftp`` line, a system-managed run built there.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.scheduler.ssh.remote_files import NO_SFTP_NOTE
from tests.e2e.conftest import Installation, wait_until
from tests.e2e.conftest import installation as installation  # the fixture, shared
from tests.ssh.conftest import SSH_TEST_USER, ClientKey, Sshd, _free_port
from tests.ssh.test_attach_e2e import HOME, attach_args, detach, key_file, show, stored_values

PROXY_PASSWORD = "hunter2-proxy-pw"
PROBE = "sortie-probe-pkg"


@pytest.fixture
def no_sftp(tmp_path: Path) -> Iterator[tuple[Sshd, Path]]:
    """An sshd without the sftp subsystem, and a known_hosts file that trusts it."""
    workdir = tmp_path / "sshd-nosftp"
    workdir.mkdir(mode=0o700)
    server = Sshd(workdir=workdir, port=_free_port(), sftp=False)
    server.start()
    known_hosts = tmp_path / "known_hosts_nosftp"
    known_hosts.write_text(server.known_hosts_line())
    known_hosts.chmod(0o600)
    try:
        yield server, known_hosts
    finally:
        server.stop()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def probe_wheel(folder: Path) -> Path:
    """A one-module wheel no package index has: a build finds it only through the
    UV_FIND_LINKS given to the remote agent."""
    dist = "sortie_probe_pkg-1.0.dist-info"
    files = {
        "sortie_probe_pkg/__init__.py": b"VALUE = 'probe from the local wheel'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = io.StringIO()
    for name, data in files.items():
        record.write(f"{name},{_record_hash(data)},{len(data)}\n")
    record.write(f"{dist}/RECORD,,\n")
    path = folder / "sortie_probe_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", record.getvalue())
    return path


@pytest.fixture
def find_links() -> Iterator[Path]:
    """A folder the remote user can read, holding the probe wheel."""
    folder = Path(tempfile.mkdtemp(prefix="sortie-find-links-"))
    folder.chmod(0o755)
    probe_wheel(folder).chmod(0o644)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_bad_agent_env_is_refused_and_nothing_is_attached(
    installation: Installation, sshd: Sshd, known_hosts: Path, client_key: ClientKey, tmp_path: Path
) -> None:
    key = key_file(tmp_path, client_key)
    for bad, says in (
        ("HTTPS_PROXY", "--agent-env takes KEY=VALUE"),
        ("1X=y", "--agent-env: variable name '1X' is not valid"),
        ("SORTIE_URL=nats://x", "SORTIE_* names are Sortie's own"),
    ):
        args = attach_args("bad-env", sshd, known_hosts, "--private-key-file", str(key))
        proc = installation.cli(*args, "--agent-env", bad)
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and "Traceback" not in proc.stderr
    assert "bad-env" not in [c["name"] for c in installation.json("compute", "list")]


def test_attach_without_sftp_with_agent_env_builds_a_system_managed_run(
    installation: Installation,
    no_sftp: tuple[Sshd, Path],
    client_key: ClientKey,
    find_links: Path,
    tmp_path: Path,
) -> None:
    sshd_no_sftp, no_sftp_known_hosts = no_sftp
    key = key_file(tmp_path, client_key)
    proxy = f"http://alice:{PROXY_PASSWORD}@127.0.0.1:9"
    proc = installation.cli(
        *attach_args("net-box", sshd_no_sftp, no_sftp_known_hosts, "--private-key-file", str(key)),
        "--agent-env", f"HTTPS_PROXY={proxy}",
        "--agent-env", f"UV_FIND_LINKS={find_links}",
        "--agent-env", "UV_OFFLINE=1",  # the build may use the local wheel alone
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"[net-box] {NO_SFTP_NOTE}" in proc.stderr and "[net-box] agent started" in proc.stderr
    assert "HTTPS_PROXY=http://***@127.0.0.1:9" in proc.stderr
    vm = show(installation, "net-box")
    assert vm["provisioning_state"] == "Succeeded" and vm["username"] == SSH_TEST_USER
    assert vm["agent_env"]["HTTPS_PROXY"] == "http://***@127.0.0.1:9"
    assert vm["agent_env"]["UV_FIND_LINKS"] == str(find_links)
    text = installation.cli("compute", "show", "net-box", check=True).stdout
    assert "agent_env" in text and "HTTPS_PROXY=http://***@127.0.0.1:9" in text
    # the agent's credentials went over the exec channel too, readable by its user alone
    assert oct((HOME / ".sortie" / "agent.creds").stat().st_mode & 0o777) == "0o600"

    src = tmp_path / "job"
    src.mkdir()
    (src / "probe.py").write_text("import sortie_probe_pkg\nprint(sortie_probe_pkg.VALUE)\n")
    sub = installation.json(
        "run", "submit", str(src), "--script", "probe.py", "--target", "net-box", "--pip", PROBE
    )
    assert isinstance(sub, dict)
    done = installation.cli("run", "wait", sub["run_id"], timeout=300)
    logs = installation.cli("run", "logs", sub["run_id"], check=True).stdout
    assert done.returncode == 0, logs
    assert "probe from the local wheel" in logs

    # the proxy's password is shown and logged nowhere
    for view in (("compute", "show", "net-box", "--output", "json"), ("compute", "list")):
        out = installation.cli(*view, check=True)
        assert PROXY_PASSWORD not in out.stdout + out.stderr, view
    assert PROXY_PASSWORD not in installation.log.read_text()
    assert PROXY_PASSWORD not in logs
    assert PROXY_PASSWORD not in (HOME / ".sortie" / "agent.log").read_text()
    # nor stored: the machine's record keeps the variables as shown (clients read it)
    assert PROXY_PASSWORD.encode() not in stored_values(installation)

    detach(installation, "net-box")
    wait_until(lambda: not (HOME / ".sortie").exists(), timeout=30)
