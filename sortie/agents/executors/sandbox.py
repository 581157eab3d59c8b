"""The I/O of run isolation (``agents.isolation`` says what; this does it).

:func:`make_isolation` decides once, at agent start, how this agent isolates runs: as root, a
run user (``--run-user``, default ``sortie-run``) or a uid per concurrent run (``--run-uids``);
any agent, Landlock where the kernel has it. :func:`prepare_spawn` readies one attempt: its
private tmp, its files handed to its uid, and the Landlock ruleset that the child applies to
itself before exec (:class:`Spawn`, which ``executors.process.start_process`` uses).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from sortie.agents import isolation as iso
from sortie.agents import landlock
from sortie.agents.executors import AttemptFiles, ExecutorError
from sortie.agents.pipeline_data import IN, OUT
from sortie.bus.children import die_with_parent
from sortie.proto.messages import RunIsolation
from sortie.proto.run_errors import ErrorKind


class IsolationError(Exception):
    """The agent cannot isolate runs as configured; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class Isolation:
    """How this agent isolates its runs (one per agent, used from its event loop only)."""

    uids: tuple[int, ...] = ()  # run as one of these (empty: as the agent's own user)
    gid: int | None = None  # with a run user: its group (None: each uid's own number)
    shared_uid: bool = True  # one user for every run (else a uid per concurrent run)
    landlock_abi: int = 0
    shared_dirs: tuple[PurePath, ...] = ()  # writable by every run (iso.ENV_RUN_WRITABLE)
    _taken: set[int] = field(default_factory=set, compare=False, repr=False)  # uids in use

    @property
    def mode(self) -> RunIsolation:
        return iso.isolation_mode(as_user=bool(self.uids), landlock=self.landlock_abi > 0)

    def take_uid(self) -> int | None:
        """The uid for a starting run (None: the agent's own); raise ExecutorError when every
        uid of the range is in use."""
        if not self.uids:
            return None
        if self.shared_uid:
            return self.uids[0]
        uid = iso.free_uid(self.uids, self._taken)
        if uid is None:
            raise ExecutorError(
                f"all {len(self.uids)} run uids (--run-uids) are in use by running runs: "
                "give the agent a larger range",
                ErrorKind.START,
            )
        self._taken.add(uid)
        return uid

    def give_uid(self, uid: int | None) -> None:
        if uid is not None:
            self._taken.discard(uid)


NO_ISOLATION = Isolation()


def make_isolation(
    *, run_user: str | None, run_uids: str | None, landlock_abi: int | None = None
) -> Isolation:
    """This agent's isolation; raise IsolationError if the run user cannot be had."""
    abi = landlock.abi_version() if landlock_abi is None else landlock_abi
    shared = tuple(
        PurePath(p) for p in os.environ.get(iso.ENV_RUN_WRITABLE, "").split(os.pathsep) if p
    )
    if os.geteuid() != 0:
        if run_user or run_uids:
            raise IsolationError(
                "--run-user and --run-uids need an agent running as root (it starts each run "
                "as that user); unprivileged agents confine runs with Landlock instead"
            )
        return Isolation(landlock_abi=abi, shared_dirs=shared)
    if run_uids:
        try:
            uids = iso.parse_uid_range(run_uids)
        except iso.UidRangeError as exc:
            raise IsolationError(str(exc)) from None
        return Isolation(uids=tuple(uids), shared_uid=False, landlock_abi=abi, shared_dirs=shared)
    name = run_user or iso.DEFAULT_RUN_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise IsolationError(
            f"the agent runs as root and starts runs as user {name!r}, which does not exist: "
            f"create it (useradd --system --no-create-home --shell /usr/sbin/nologin {name}), "
            "or name another with --run-user, or give a range with --run-uids FIRST-LAST"
        ) from None
    if entry.pw_uid == 0:
        raise IsolationError(f"--run-user {name!r} is root: name an unprivileged user")
    return Isolation(uids=(entry.pw_uid,), gid=entry.pw_gid, landlock_abi=abi, shared_dirs=shared)


def prepare_agent_dirs(isolation: Isolation, data_dir: Path) -> None:
    """As root: let run users through the agent's data dir to their own run (0711: enter, not
    list); raise IsolationError naming a parent directory they cannot pass."""
    if not isolation.uids:
        return
    for d in (data_dir, data_dir / "runs"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o711)
    blobs = data_dir / "blobs"  # every run's snapshot files: the agent's alone
    blobs.mkdir(exist_ok=True)
    blobs.chmod(0o700)
    for parent in data_dir.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise IsolationError(
                f"runs start as an unprivileged user, who cannot pass {parent} (mode "
                f"{stat.filemode(parent.stat().st_mode)}) to reach the agent's data dir "
                f"{data_dir}: allow it with `chmod o+x {parent}`, or choose a data dir under "
                "a path others may pass"
            )


@dataclass(frozen=True, kw_only=True)
class Spawn:
    """The hook a run's child runs before exec: its user, death with the agent, its sandbox."""

    user: int | None  # None: the agent's own
    preexec: Callable[[], None]
    release: Callable[[], None]  # after the run: its uid and ruleset given back


def scratch_dir(files: AttemptFiles) -> Path:
    """The run's private tmp (TMPDIR, HOME), beside its working directory."""
    return files.workdir.with_name(f"{files.workdir.name}.tmp")


def run_base_env(isolation: Isolation, files: AttemptFiles) -> dict[str, str]:
    """The variables a run starts from: the agent's, less Sortie's own; where it is isolated,
    its private tmp as TMPDIR and HOME."""
    env = iso.inherited_env(os.environ)
    if isolation.mode != "none":
        scratch = str(scratch_dir(files))
        env.update(TMPDIR=scratch, HOME=scratch)
    return env


def prepare_spawn(isolation: Isolation, files: AttemptFiles, python: str) -> Spawn:
    """Ready one attempt for its sandbox; raise ExecutorError if it cannot be confined."""
    scratch = scratch_dir(files)
    scratch.mkdir(mode=0o700, exist_ok=True)
    uid = isolation.take_uid()
    try:
        gid = isolation.gid if isolation.gid is not None else uid
        if uid is not None and gid is not None:
            _hand_over(files, scratch, uid, gid)
        fd = _ruleset(isolation, files, scratch, python)
    except BaseException:
        isolation.give_uid(uid)
        raise

    def preexec() -> None:
        # in the child, in this order: the ids (which would clear the parent-death signal),
        # the parent-death signal, then the sandbox. Done here, not with Popen's user/group,
        # which uvloop's subprocess does not take.
        if uid is not None and gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        die_with_parent()
        if fd is not None:
            landlock.restrict_self(fd)

    def release() -> None:
        isolation.give_uid(uid)
        if fd is not None:
            os.close(fd)

    return Spawn(
        user=uid,
        preexec=preexec,
        release=release,
    )


def _ruleset(isolation: Isolation, files: AttemptFiles, scratch: Path, python: str) -> int | None:
    if isolation.landlock_abi <= 0:
        return None
    paths = iso.SandboxPaths(
        workdir=files.workdir,
        run_dir=files.workdir.parent,
        scratch=scratch,
        metrics_file=files.metrics,
        runtime_dir=files.runtime_dir,
        interpreter_roots=_interpreter_roots(python),
        shared_dirs=isolation.shared_dirs,
        data_in=files.data / IN if files.data is not None else None,
        data_out=files.data / OUT if files.data is not None else None,
    )
    try:
        return landlock.build_ruleset(iso.sandbox_rules(paths), isolation.landlock_abi)
    except OSError as exc:
        raise ExecutorError(
            f"cannot confine the run (Landlock): {exc}; the run was not started",
            ErrorKind.START,
        ) from exc


def _interpreter_roots(python: str) -> tuple[PurePath, ...]:
    path = Path(python)
    home = None
    try:
        for line in (path.parent.parent / "pyvenv.cfg").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "home":
                home = PurePath(value.strip())
    except OSError:
        pass
    return iso.interpreter_roots(PurePath(path), PurePath(path.resolve()), home)


def _hand_over(files: AttemptFiles, scratch: Path, uid: int, gid: int) -> None:
    """The run's uid owns its working tree, its pipeline data, private tmp and metrics pipe;
    the rest of its run directory (pid, stop reason, hostfile) stays the agent's, readable,
    not writable."""
    files.workdir.parent.chmod(0o711)
    for tree in (files.workdir, files.data):
        if tree is None:
            continue
        for path in _tree(tree):
            os.lchown(path, uid, gid)
        tree.chmod(0o700)
    os.chown(scratch, uid, gid)
    scratch.chmod(0o700)
    if files.metrics.exists():
        os.chown(files.metrics, uid, gid)


def _tree(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            yield Path(dirpath) / name
