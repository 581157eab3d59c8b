"""Installing, starting, stopping and removing an agent on a remote host, without root.

Everything lives under `~/<remote_dir>` (default `~/.sortie`): `wheels/` (copied over SFTP, or
over exec channels where the host has no SFTP: `remote_files`),
`bin/uv` (taken out of the uv wheel with the remote Python's zipfile module, so the host needs
neither python3-venv nor ensurepip), `venv/` (made by uv, filled offline from `wheels/`),
`agent/` (the agent's data), `agent.log` and `agent.pid`.

Every remote shell argument is quoted with `shlex.quote`. A failed remote command raises
SshError with the tail of its output.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import asyncssh
import msgspec

from sortie.proto.agent_env import SETTINGS_CHECKED
from sortie.proto.engines import Engine
from sortie.scheduler.ssh import SshError
from sortie.scheduler.ssh.remote_files import open_files

MIN_PYTHON = (3, 11)
DEFAULT_CANDIDATES = ("python3.13", "python3.12", "python3.11", "python3")
OUTPUT_TAIL = 4000
START_CHECK_S = 3.0  # an agent alive this long after it logged its settings checked has started
START_LIMIT_S = 60.0  # the longest wait for that line

_REMOTE_DIR_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def _tail(text: str) -> str:
    return text[-OUTPUT_TAIL:]


def check_remote_dir(remote_dir: str) -> str:
    """A relative path under the remote home, without '..': refuse anything else."""
    path = PurePosixPath(remote_dir)
    if (
        not remote_dir
        or path.is_absolute()
        or not path.parts
        or any(p in (".", "..") or not _REMOTE_DIR_PART.match(p) for p in path.parts)
    ):
        raise ValueError(
            f"remote_dir must be a relative path under the remote home without '..' "
            f"(got {remote_dir!r})"
        )
    return path.as_posix()


async def _run(
    conn: asyncssh.SSHClientConnection, command: str, *, limit_s: float | None = 600.0
) -> tuple[int, str]:
    """Run a shell command; (exit status, stdout+stderr)."""
    result = await conn.run(command, check=False, stderr=asyncssh.STDOUT, timeout=limit_s)
    out = result.stdout if isinstance(result.stdout, str) else (result.stdout or b"").decode()
    status = result.exit_status if result.exit_status is not None else 255
    return status, out


async def _must(
    conn: asyncssh.SSHClientConnection, command: str, what: str, *, code: str = "install_failed"
) -> str:
    try:
        status, out = await _run(conn, command)
    except asyncssh.ProcessError as exc:  # pragma: no cover (check=False)
        raise SshError(code, f"{what} failed on the remote host", output=str(exc)) from None
    except asyncssh.TimeoutError as exc:
        out = str(exc.stdout or "")
        raise SshError(code, f"{what} timed out on the remote host", output=_tail(out)) from None
    if status != 0:
        raise SshError(
            code, f"{what} failed on the remote host (exit status {status})", output=_tail(out)
        )
    return out


async def remote_home(conn: asyncssh.SSHClientConnection) -> str:
    out = await _must(conn, 'printf "%s" "$HOME"', "finding the home directory")
    home = out.strip()
    if not home.startswith("/"):
        raise SshError("install_failed", f"the remote $HOME is not an absolute path: {home!r}")
    return home


# --- the remote Python ----------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...] | None:
    """'3.11.2' (or 'Python 3.11.2', '3.13.0rc1') -> (3, 11, 2); None if it is not one."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def choose_python(found: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The first (path, version) that is new enough, or the SshError that says why none is."""
    for path, version in found:
        v = parse_version(version)
        if v is not None and v[:2] >= MIN_PYTHON:
            return path, version
    need = ".".join(map(str, MIN_PYTHON))
    if not found:
        raise SshError(
            "python_missing",
            f"no Python found on the remote host's PATH; Sortie needs Python {need} or newer "
            "there: install it (e.g. apt-get install python3), then attach again",
        )
    path, version = found[0]
    raise SshError(
        "python_too_old",
        f"found Python {version} at {path}; Sortie needs Python {need} or newer on the remote "
        "host: install it, then attach again",
    )


async def remote_python(
    conn: asyncssh.SSHClientConnection,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
) -> tuple[str, str]:
    """(path, version) of the first candidate >= 3.11 on the remote PATH."""
    probe = "import sys; print(sys.version.split()[0])"
    script = "\n".join(
        f"p=$(command -v {shlex.quote(c)} 2>/dev/null) && "
        f'v=$("$p" -c {shlex.quote(probe)} 2>/dev/null) && printf "%s\\t%s\\n" "$p" "$v"'
        for c in candidates
    )
    _, out = await _run(conn, script + "\ntrue", limit_s=60.0)
    found: list[tuple[str, str]] = []
    for line in out.splitlines():
        path, sep, version = line.partition("\t")
        if sep and path.startswith("/") and parse_version(version) is not None:
            found.append((path, version.strip()))
    return choose_python(found)


# --- install --------------------------------------------------------------------------------

_EXTRACT_UV = """
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
stamp = dest + ".wheel"
name = os.path.basename(wheel)
if os.path.exists(dest) and os.path.exists(stamp) and open(stamp).read() == name:
    sys.exit(0)
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith(".data/scripts/uv")]
    if not members:
        sys.exit("no uv binary in " + name)
    tmp = dest + ".tmp"
    with z.open(members[0]) as src, open(tmp, "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
with open(stamp, "w") as f:
    f.write(name)
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


async def _copy_wheels(
    conn: asyncssh.SSHClientConnection,
    wheelhouse: Path,
    remote_wheels: str,
    progress: Callable[[str], None],
) -> None:
    local = sorted(await asyncio.to_thread(lambda: list(wheelhouse.glob("*.whl"))))
    if not local:
        raise SshError("install_failed", f"no wheels in {wheelhouse}")
    async with open_files(conn, progress) as files:
        await files.makedirs(remote_wheels)
        remote_sizes = await files.sizes(remote_wheels, ".whl")
        wanted = {p.name for p in local}
        # A manifest of what was copied (name, size, sha256) tells an unchanged wheel from
        # one rebuilt with the same name and size (the project's own wheel, after an edit).
        manifest_path = f"{remote_wheels}/.manifest"
        copied: dict[str, str] = {}
        for line in (await files.read_text(manifest_path) or "").splitlines():
            name, _, digest = line.partition(" ")
            copied[name] = digest
        digests = await asyncio.to_thread(lambda: {p.name: _sha256(p) for p in local})
        todo = [
            p
            for p in local
            if remote_sizes.get(p.name) != p.stat().st_size or copied.get(p.name) != digests[p.name]
        ]
        total = sum(p.stat().st_size for p in todo)
        if todo:
            n = len(todo)
            progress(f"copying {n} wheel{'s' if n != 1 else ''} ({_mb(total)})")
        else:
            progress("wheels already on the host")
        for p in todo:
            await files.put(p, f"{remote_wheels}/{p.name}")
        if todo or set(copied) != wanted:
            text = "".join(f"{n} {d}\n" for n, d in sorted(digests.items()))
            await files.write_text(manifest_path, text)
        # Wheels of older builds would let an offline install pick a stale version.
        for name in remote_sizes:
            if name not in wanted:
                await files.remove(f"{remote_wheels}/{name}")


async def install_agent(
    conn: asyncssh.SSHClientConnection,
    wheelhouse: Path,
    *,
    remote_dir: str = ".sortie",
    progress: Callable[[str], None],
) -> str:
    """Install Sortie into `~/<remote_dir>/venv` offline; return its `sortie` path."""
    rel = check_remote_dir(remote_dir)
    progress("checking the remote Python")
    # Prefer the scheduler's own minor version: its binary wheels are the ones built.
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = tuple(dict.fromkeys((own, *DEFAULT_CANDIDATES)))
    python, version = await remote_python(conn, candidates)
    progress(f"found Python {version} at {python}")
    home = await remote_home(conn)
    base = f"{home}/{rel}"

    await _copy_wheels(conn, wheelhouse, f"{rel}/wheels", progress)
    await _unpack_uv(conn, wheelhouse, python, base, progress)
    progress("creating the venv")
    await _create_venv(conn, python, base)
    progress("installing Sortie offline")
    await _install_sortie(conn, wheelhouse, base, version)
    sortie_bin = f"{base}/venv/bin/sortie"
    await _must(
        conn, f"{shlex.quote(sortie_bin)} --help >/dev/null", "running the installed sortie"
    )
    progress(f"installed Sortie at {sortie_bin}")
    return sortie_bin


def _uv_env(base: str) -> str:
    """uv offline, with its cache inside the install directory (removing that removes all),
    trusting the host's system certificates (a proxy's CA the host trusts)."""
    return (
        "UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1 UV_NATIVE_TLS=1 "
        f"UV_CACHE_DIR={shlex.quote(base + '/uv-cache')}"
    )


async def _unpack_uv(
    conn: asyncssh.SSHClientConnection,
    wheelhouse: Path,
    python: str,
    base: str,
    progress: Callable[[str], None],
) -> None:
    """Take `bin/uv` out of the copied uv wheel with the remote Python's zipfile module."""
    uv_wheels = sorted(await asyncio.to_thread(lambda: list(wheelhouse.glob("uv-*.whl"))))
    if not uv_wheels:
        raise SshError("install_failed", f"no uv wheel in {wheelhouse}")
    progress("unpacking uv")
    q = shlex.quote
    wheel = f"{base}/wheels/{uv_wheels[-1].name}"
    await _must(
        conn,
        f"mkdir -p {q(base + '/bin')} && {q(python)} -c {q(_EXTRACT_UV)} {q(wheel)} "
        f"{q(base + '/bin/uv')}",
        "unpacking uv from its wheel",
    )


async def _create_venv(conn: asyncssh.SSHClientConnection, python: str, base: str) -> None:
    """`~/<remote_dir>/venv`, unless one that runs is there already."""
    q = shlex.quote
    venv, uv = f"{base}/venv", f"{base}/bin/uv"
    await _must(
        conn,
        f"if {q(venv + '/bin/python')} -c '' 2>/dev/null; then echo venv exists; else "
        f"rm -rf {q(venv)} && {_uv_env(base)} {q(uv)} venv --no-project {q(venv)} "
        f"--python {q(python)}; fi",
        "creating the venv",
    )


async def _install_sortie(
    conn: asyncssh.SSHClientConnection, wheelhouse: Path, base: str, version: str
) -> None:
    """Install Sortie into the venv from the copied wheels only; a failure names the Python
    the wheels were built for next to the host's."""
    q = shlex.quote
    try:
        await _must(
            conn,
            f"{_uv_env(base)} {q(base + '/bin/uv')} pip install "
            f"--python {q(base + '/venv/bin/python')} --offline "
            f"--no-index --find-links {q(base + '/wheels')} --reinstall-package sortie sortie",
            "installing Sortie from the copied wheels",
        )
    except SshError as exc:
        tag = wheelhouse / "python-tag.txt"
        built = tag.read_text().strip() if tag.exists() else "unknown"
        raise SshError(
            exc.code,
            f"{exc.message}; the wheels were built for {built} and the host runs Python {version}",
            output=exc.output,
        ) from None


# --- the agent process ----------------------------------------------------------------------

# Shell helpers: is PID alive (not a zombie) and is it our agent (its command line names our
# data directory, so a reused pid is never signalled)?
_ALIVE = r"""
alive() {
    [ -d "/proc/$1" ] || return 1
    st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
ours() {
    tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$DATA"
}
"""


def _stop_script(base: str, grace_s: float) -> str:
    q = shlex.quote
    ticks = max(1, int(grace_s * 5))
    return f"""
DATA={q(base + "/agent")}
PIDFILE={q(base + "/agent.pid")}
{_ALIVE}
pid=$(cat "$PIDFILE" 2>/dev/null || true)
case "$pid" in ''|*[!0-9]*) rm -f "$PIDFILE"; echo "no agent"; exit 0;; esac
if ! alive "$pid" || ! ours "$pid"; then rm -f "$PIDFILE"; echo "no agent"; exit 0; fi
kill -TERM "$pid" 2>/dev/null
i=0
while alive "$pid" && [ "$i" -lt {ticks} ]; do sleep 0.2; i=$((i + 1)); done
if alive "$pid"; then
    echo "agent $pid did not stop within {grace_s:g} s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
    i=0
    while alive "$pid" && [ "$i" -lt 25 ]; do sleep 0.2; i=$((i + 1)); done
fi
rm -f "$PIDFILE"
echo "stopped agent $pid"
"""


async def stop_agent(
    conn: asyncssh.SSHClientConnection, *, remote_dir: str, grace_s: float = 10.0
) -> None:
    """SIGTERM the agent named by the pid file, SIGKILL after `grace_s`; fine if none runs."""
    rel = check_remote_dir(remote_dir)
    home = await remote_home(conn)
    await _must(
        conn, _stop_script(f"{home}/{rel}", grace_s), "stopping the agent", code="agent_failed"
    )


@dataclass(frozen=True)
class AgentAccess:
    """How a remote agent proves itself to the broker besides its URL: the paths, on its host,
    of its own credentials and of the broker's CA, and the name the broker's certificate
    carries (the agent reaches the broker through a forward, at 127.0.0.1); and the variables
    added to its environment (the operator's proxy and CA settings, which the environment
    builds it runs inherit)."""

    creds_path: str | None = None
    tls_ca_path: str | None = None
    tls_hostname: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def args(self) -> list[str]:
        """The `sortie` options that say so."""
        out: list[str] = []
        if self.creds_path is not None:
            out += ["--creds", self.creds_path]
        if self.tls_ca_path is not None:
            out += ["--tls-ca", self.tls_ca_path]
        if self.tls_hostname is not None:
            out += ["--tls-hostname", self.tls_hostname]
        return out


def engine_args(engine: Engine | None) -> list[str]:
    """The `sortie agent` options that make it hand its runs to ``engine`` (none: it runs
    them itself)."""
    if engine is None:
        return []
    return ["--engine", msgspec.json.encode(engine).decode()]


async def start_agent(
    conn: asyncssh.SSHClientConnection,
    *,
    sortie_bin: str,
    remote_dir: str,
    broker_url: str,
    target: str,
    agent_id: str,
    extra_args: Sequence[str] = (),
    access: AgentAccess = AgentAccess(),
) -> int:
    """Start the agent detached from the SSH session; return its pid.

    An agent from an earlier start is stopped first. Raises SshError("agent_failed") with the
    tail of agent.log if the new process is gone within a few seconds.
    """
    rel = check_remote_dir(remote_dir)
    home = await remote_home(conn)
    base = f"{home}/{rel}"
    await stop_agent(conn, remote_dir=rel)
    argv = [
        sortie_bin,
        "--url",
        broker_url,
        *access.args(),
        "--log-level",
        "info",
        "agent",
        "--target",
        target,
        "--name",
        agent_id,
        "--data-dir",
        f"{base}/agent",
        *extra_args,
    ]
    if access.env:
        argv = ["env", *(f"{key}={value}" for key, value in access.env.items()), *argv]
    out = await _must(conn, _launch_script(base, argv), "starting the agent", code="agent_failed")
    try:
        pid = int(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SshError("agent_failed", "starting the agent printed no pid", _tail(out)) from None
    await _check_started(conn, base, pid)
    return pid


def _launch_script(base: str, argv: Sequence[str]) -> str:
    """A shell script that starts ``argv`` in the background, logging to agent.log (the last
    one kept as agent.log.1) and writing agent.pid; it prints the agent's pid."""
    q = shlex.quote
    log = f"{base}/agent.log"
    # No job control in this shell, so the background child is no group leader and setsid
    # runs the agent in a new session without forking again: $! is the agent's pid.
    return f"""
set -e
mkdir -p {q(base + "/agent")}
cd {q(base)}
[ -f {q(log)} ] && mv -f {q(log)} {q(log + ".1")}
setsid nohup {" ".join(q(a) for a in argv)} </dev/null >{q(log)} 2>&1 &
echo $! >{q(base + "/agent.pid")}
echo $!
"""


async def _check_started(conn: asyncssh.SSHClientConnection, base: str, pid: int) -> None:
    """Watch the new agent for START_CHECK_S, and on until it logs that its settings are
    checked (its first start on a host compiles its code: slow under load), at most
    START_LIMIT_S; SshError("agent_failed") with the tail of its log if it is gone by then."""
    q = shlex.quote
    log = f"{base}/agent.log"
    least, most = int(START_CHECK_S * 5), int(START_LIMIT_S * 5)
    check = f"""
DATA={q(base + "/agent")}
{_ALIVE}
i=0
while [ "$i" -lt {most} ]; do
    alive {pid} || break
    if [ "$i" -ge {least} ] && grep -qF {q(SETTINGS_CHECKED)} {q(log)} 2>/dev/null; then break; fi
    sleep 0.2; i=$((i + 1))
done
if alive {pid}; then echo alive; else echo dead; tail -c {OUTPUT_TAIL} {q(log)}; fi
"""
    _, out = await _run(conn, check, limit_s=START_LIMIT_S + 30.0)
    first, _, rest = out.partition("\n")
    if first.strip() != "alive":
        await _run(conn, f"rm -f {q(base + '/agent.pid')}", limit_s=30.0)
        raise SshError(
            "agent_failed",
            f"the agent exited right after it started (see {log} on the host)",
            output=_tail(rest),
        )


async def install_private_file(
    conn: asyncssh.SSHClientConnection, *, remote_dir: str, name: str, text: str
) -> str:
    """Write ``text`` to ``~/<remote_dir>/<name>``, readable by the remote user only (0600
    from its creation; the agent's credentials); return the absolute path."""
    rel = check_remote_dir(remote_dir)
    if not _REMOTE_DIR_PART.match(name):
        raise ValueError(f"bad remote file name {name!r}")
    home = await remote_home(conn)
    async with open_files(conn) as files:
        await files.makedirs(rel)
        await files.write_text(f"{rel}/{name}", text, private=True)
    return f"{home}/{rel}/{name}"


async def remove_install(conn: asyncssh.SSHClientConnection, *, remote_dir: str) -> None:
    """Remove `~/<remote_dir>` (and only that)."""
    rel = check_remote_dir(remote_dir)
    home = await remote_home(conn)
    await _must(conn, f"rm -rf -- {shlex.quote(f'{home}/{rel}')}", "removing the install")
