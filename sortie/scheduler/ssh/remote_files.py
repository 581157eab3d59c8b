"""Files on a remote host: over SFTP, or over exec channels where the host has no SFTP.

Some hosts run sshd without the ``sftp`` subsystem (no ``Subsystem sftp ...`` line). Opening
SFTP there fails (asyncssh: ``ChannelOpenError: Session request failed``); :func:`open_files`
then falls back to plain commands on exec channels: a file goes to ``cat > TMP`` on the
command's standard input and is renamed into place, a listing comes from the shell. Both
speak paths relative to the remote home (where SFTP and a command start), and both write
through a temporary name and a rename, so a reader never sees half a file.

Every remote shell argument is quoted with ``shlex.quote``; no file's content is ever put in
a command line (credentials go through standard input).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import asyncssh

from sortie.scheduler.ssh import SshError

COPY_LIMIT_S = 1800.0  # one file over an exec channel (a wheel of a few hundred MB)
COMMAND_LIMIT_S = 120.0
NO_SFTP_NOTE = "the host has no SFTP subsystem: copying files over SSH commands instead"
# what opening SFTP raises on a host whose sshd has no sftp subsystem
_NO_SFTP = (asyncssh.ChannelOpenError, asyncssh.SFTPError)


class RemoteFiles(Protocol):
    """What installing an agent needs of the remote file system."""

    async def makedirs(self, path: str) -> None: ...

    async def sizes(self, path: str, suffix: str) -> dict[str, int]:
        """The files named ``*suffix`` in the directory ``path`` and their sizes."""
        ...

    async def read_text(self, path: str) -> str | None:
        """The file's text, None if it does not exist."""
        ...

    async def put(self, local: Path, path: str) -> None:
        """Copy ``local`` to ``path`` (through a temporary name beside it)."""
        ...

    async def write_text(self, path: str, text: str, *, private: bool = False) -> None:
        """Write ``text`` to ``path`` (through a temporary name; 0600 from its creation when
        ``private``)."""
        ...

    async def remove(self, path: str) -> None: ...


def _tmp(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/.{name}.part" if head else f".{name}.part"


class SftpFiles:
    def __init__(self, sftp: asyncssh.SFTPClient) -> None:
        self._sftp = sftp

    async def makedirs(self, path: str) -> None:
        await self._sftp.makedirs(path, exist_ok=True)

    async def sizes(self, path: str, suffix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in await self._sftp.readdir(path):
            name = str(entry.filename)
            if name.endswith(suffix) and entry.attrs.size is not None:
                out[name] = entry.attrs.size
        return out

    async def read_text(self, path: str) -> str | None:
        if not await self._sftp.exists(path):
            return None
        async with self._sftp.open(path, "r") as f:
            return str(await f.read())

    async def put(self, local: Path, path: str) -> None:
        await self._sftp.put(str(local), _tmp(path))
        await self._sftp.posix_rename(_tmp(path), path)

    async def write_text(self, path: str, text: str, *, private: bool = False) -> None:
        tmp = _tmp(path)
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await self._sftp.remove(tmp)
        attrs = asyncssh.SFTPAttrs(permissions=0o600) if private else asyncssh.SFTPAttrs()
        async with self._sftp.open(tmp, "w", attrs=attrs) as f:
            await f.write(text)
        if private:
            await self._sftp.chmod(tmp, 0o600)
        await self._sftp.posix_rename(tmp, path)

    async def remove(self, path: str) -> None:
        await self._sftp.remove(path)


class ExecFiles:
    """The same over exec channels: ``sh`` commands, data on standard input."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    async def _sh(
        self,
        command: str,
        what: str,
        *,
        data: bytes | None = None,
        local_file: Path | None = None,
        limit_s: float = COMMAND_LIMIT_S,
    ) -> str:
        """Run ``command``, its standard input ``data`` or the contents of ``local_file``;
        its output, or SshError saying ``what`` failed."""
        kwargs: dict[str, object] = {"encoding": None, "stderr": asyncssh.STDOUT}
        if data is not None:
            kwargs["input"] = data
        elif local_file is not None:
            kwargs["stdin"] = str(local_file)  # a file name: asyncssh reads and feeds it in
        try:
            result = await self._conn.run(command, check=False, timeout=limit_s, **kwargs)
        except asyncssh.TimeoutError:
            raise SshError("install_failed", f"{what} timed out on the remote host") from None
        raw = result.stdout if isinstance(result.stdout, bytes) else b""
        out = raw.decode("utf-8", errors="replace")
        if result.exit_status != 0:
            raise SshError(
                "install_failed",
                f"{what} failed on the remote host (exit status {result.exit_status})",
                output=out[-4000:],
            )
        return out

    async def makedirs(self, path: str) -> None:
        await self._sh(f"mkdir -p -- {shlex.quote(path)}", f"creating {path}")

    async def sizes(self, path: str, suffix: str) -> dict[str, int]:
        q = shlex.quote
        out = await self._sh(
            f"cd -- {q(path)} && for f in *{q(suffix)}; do "
            '[ -f "$f" ] && printf "%s\\t%s\\n" "$(wc -c <"$f")" "$f"; done; true',
            f"listing {path}",
        )
        found: dict[str, int] = {}
        for line in out.splitlines():
            size, sep, name = line.partition("\t")
            if sep and size.strip().isdigit():
                found[name] = int(size.strip())
        return found

    async def read_text(self, path: str) -> str | None:
        q = shlex.quote(path)
        out = await self._sh(f"if [ -f {q} ]; then echo y; cat -- {q}; else echo n; fi", path)
        flag, _, text = out.partition("\n")
        return text if flag == "y" else None

    async def put(self, local: Path, path: str) -> None:
        q, tmp = shlex.quote, _tmp(path)
        await self._sh(
            f"cat >{q(tmp)} && mv -f -- {q(tmp)} {q(path)}",
            f"copying {local.name}",
            local_file=local,
            limit_s=COPY_LIMIT_S,
        )

    async def write_text(self, path: str, text: str, *, private: bool = False) -> None:
        q, tmp = shlex.quote, _tmp(path)
        mode = f"umask 077 && rm -f -- {q(tmp)} && " if private else ""
        await self._sh(
            f"{mode}cat >{q(tmp)} && mv -f -- {q(tmp)} {q(path)}",
            f"writing {path}",
            data=text.encode(),
        )

    async def remove(self, path: str) -> None:
        await self._sh(f"rm -f -- {shlex.quote(path)}", f"removing {path}")


@contextlib.asynccontextmanager
async def open_files(
    conn: asyncssh.SSHClientConnection, progress: Callable[[str], None] = lambda _: None
) -> AsyncIterator[RemoteFiles]:
    """SFTP when the host offers it, else exec channels (saying so through ``progress``)."""
    try:
        sftp = await conn.start_sftp_client()
    except _NO_SFTP:
        progress(NO_SFTP_NOTE)
        yield ExecFiles(conn)
        return
    async with sftp:
        yield SftpFiles(sftp)
