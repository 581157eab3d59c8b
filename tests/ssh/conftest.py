"""A real OpenSSH sshd on 127.0.0.1 for the SSH tests, with its own host key and config.

The system side (the sshd binary, the `sortie-test` user and its password, /run/sshd) comes
from tests/setup-system.sh, which test.sh runs. Nothing here is skipped: without that setup
the fixtures fail and say what to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from sortie.scheduler.ssh import SshCredentials, SshTarget

# The test user's password; setup-system.sh reads it from this line. It only opens the tests'
# own sshd on 127.0.0.1 (the system's sshd service is never started).
SSH_TEST_PASSWORD = "sortie-test-password-1"
SSH_TEST_USER = "sortie-test"
SSHD = "/usr/sbin/sshd"
KEY_PASSPHRASE = "correct horse battery staple"
WHEELHOUSE_CACHE = Path.home() / ".cache" / "sortie-test-wheelhouse"

SETUP_HINT = "run `sudo tests/setup-system.sh` (test.sh runs it) to set up the SSH tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_test_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SSH_TEST_USER)
    except KeyError:
        pytest.fail(f"user {SSH_TEST_USER!r} does not exist: {SETUP_HINT}")


@dataclass
class Sshd:
    """One sshd listening on 127.0.0.1:port; `restart(new_host_key=True)` changes its key."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    sftp: bool = True  # False: no sftp subsystem (a host whose sshd offers none)
    host_key: asyncssh.SSHKey = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.host_key = self._new_host_key()

    @property
    def config(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    def _new_host_key(self) -> asyncssh.SSHKey:
        key = asyncssh.generate_private_key("ssh-ed25519")
        path = self.workdir / "host_ed25519"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        return key

    def _write_config(self) -> None:
        subsystem = "Subsystem sftp internal-sftp\n" if self.sftp else ""
        self.config.write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.workdir / "host_ed25519"}
PidFile {self.workdir / "sshd.pid"}
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {SSH_TEST_USER}
PermitRootLogin no
StrictModes no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 50
"""
            + subsystem
        )

    def start(self) -> None:
        if not os.access(SSHD, os.X_OK):
            pytest.fail(f"{SSHD} is missing: {SETUP_HINT}")
        get_test_user()
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited at start:\n{self.log.read_text()[-3000:]}\n{SETUP_HINT}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"sshd did not listen on {self.port}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.kill_sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            self.host_key = self._new_host_key()
        self.start()

    def session_pids(self) -> list[int]:
        """The sshd processes serving connections: our listener's descendants named sshd."""
        if self.proc is None:
            return []
        children: dict[int, list[int]] = {}
        names: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
            names[int(entry.name)] = comm
        found: list[int] = []
        todo = list(children.get(self.proc.pid, []))
        while todo:
            pid = todo.pop()
            if names.get(pid) == "sshd":
                found.append(pid)
                todo.extend(children.get(pid, []))
        return found

    def kill_sessions(self) -> int:
        """SIGKILL every sshd process serving a connection (the listener stays up)."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def known_hosts_line(self) -> str:
        alg, b64 = self.host_key.export_public_key("openssh").decode().split()[:2]
        return f"[{self.host}]:{self.port} {alg} {b64}\n"

    def target(self) -> SshTarget:
        return SshTarget(address=self.host, username=SSH_TEST_USER, port=self.port)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    workdir = tmp_path / "sshd"
    workdir.mkdir(mode=0o700)
    server = Sshd(workdir=workdir, port=_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: Sshd) -> Path:
    """A known_hosts file that already trusts the test sshd's key."""
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line())
    path.chmod(0o600)
    return path


@dataclass
class ClientKey:
    key: asyncssh.SSHKey
    text: str  # the private key file's text


@pytest.fixture
def authorized() -> Iterator[list[asyncssh.SSHKey]]:
    """Keys appended here are written to sortie-test's authorized_keys (and removed after)."""
    user = get_test_user()
    ssh_dir = Path(user.pw_dir) / ".ssh"
    auth = ssh_dir / "authorized_keys"
    keys: list[asyncssh.SSHKey] = []
    saved = auth.read_bytes() if auth.exists() else None

    class Writer(list[asyncssh.SSHKey]):
        def append(self, key: asyncssh.SSHKey) -> None:
            super().append(key)
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(ssh_dir, user.pw_uid, user.pw_gid)
            with open(auth, "ab") as f:
                f.write(key.export_public_key("openssh"))
            os.chown(auth, user.pw_uid, user.pw_gid)
            auth.chmod(0o600)

    writer = Writer(keys)
    try:
        yield writer
    finally:
        if saved is None:
            auth.unlink(missing_ok=True)
        else:
            auth.write_bytes(saved)


@pytest.fixture
def client_key(authorized: list[asyncssh.SSHKey]) -> ClientKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    authorized.append(key)
    return ClientKey(key, key.export_private_key("openssh").decode())


@pytest.fixture
def protected_key(authorized: list[asyncssh.SSHKey]) -> ClientKey:
    """A passphrase-protected key (PKCS#8 PEM: OpenSSH-format encryption needs bcrypt)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    authorized.append(key)
    text = key.export_private_key("pkcs8-pem", passphrase=KEY_PASSPHRASE).decode()
    return ClientKey(key, text)


@pytest.fixture
def key_creds(client_key: ClientKey) -> SshCredentials:
    return SshCredentials(private_key=client_key.text)


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of Sortie and its dependencies, built once (cached across sessions)."""
    from sortie.scheduler.ssh.wheelhouse import build_wheelhouse

    return asyncio.run(build_wheelhouse(WHEELHOUSE_CACHE))


@pytest.fixture
def remote_dir() -> Iterator[str]:
    """A fresh install directory under sortie-test's home, removed after the test."""
    user = get_test_user()
    name = f".sortie-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        yield name
    finally:
        path = Path(user.pw_dir) / name
        pidfile = path / "agent.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().strip())
                os.killpg(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass
        shutil.rmtree(path, ignore_errors=True)
