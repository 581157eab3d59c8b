"""What a run may see and touch on its agent's host: the pure part of run isolation.

A run is code from anyone who may submit. Two layers keep it from the installation it runs in:

- **identity**: an agent running as root starts each run as an unprivileged user (default
  :data:`DEFAULT_RUN_USER`, or one uid per concurrent run from ``--run-uids``), so owner-only
  files (credentials, keys, run secrets) and other runs' 0700 directories are closed to it;
- **Landlock** (any agent, root or not, where the kernel has it): the run's process can read
  only the system, its interpreter, the runtime shim and its own run directory, and write only
  its working directory, its private tmp and its metrics pipe. Everything else (the data dir,
  its auth, other runs, the home with the client profile) is refused; other runs'
  ``/proc/PID/environ`` too, as each run is a Landlock domain of its own.

This module says which paths get which rights (:func:`sandbox_rules`), which variables the run
does not inherit from the agent (:func:`inherited_env`), and which mode an agent is in
(:func:`isolation_mode`). ``agents.landlock`` applies the rules; ``agents.executors.sandbox``
does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

from sortie.proto.messages import RunIsolation

DEFAULT_RUN_USER = "sortie-run"
# directories (os.pathsep-separated) every run of an agent may read and write beyond its own:
# shared datasets or checkpoints that outlive an attempt. Set by the operator; none by default.
ENV_RUN_WRITABLE = "SORTIE_RUN_WRITABLE"

# Landlock filesystem rights (linux/landlock.h), by the ABI that introduced them
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # all a file rule may hold
READ = READ_FILE | READ_DIR
READ_EXEC = READ | EXECUTE
# a tree the run owns: everything but making device nodes
WRITE_TREE = (
    READ_EXEC
    | WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_SYM
    | REFER
    | TRUNCATE
)
DEVICES = READ | WRITE_FILE | TRUNCATE | IOCTL_DEV

# the system, readable and executable (absent ones are skipped when the rules are applied)
SYSTEM_READ_EXEC = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
SYSTEM_READ = ("/sys",)

# variables of the agent a run does not inherit: Sortie's own (credentials, profile, data
# dir; the run's own SORTIE_* are set afresh) and ways into the broker or the container engine
STRIPPED_PREFIXES = ("SORTIE_", "NATS_")
STRIPPED_NAMES = frozenset({"DOCKER_HOST", "CONTAINER_HOST", "CONTAINERS_CONF", "XDG_RUNTIME_DIR"})


def handled_access(abi: int) -> int:
    """Every filesystem right the kernel's ABI knows: all of them are refused unless a rule
    allows them."""
    if abi <= 0:
        return 0
    rights = (MAKE_SYM << 1) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def scopes(abi: int) -> int:
    """The scopes the ABI has: no signals to, nor abstract sockets of, processes outside."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


@dataclass(frozen=True)
class PathRule:
    """``rights`` beneath ``path`` (a file gets only the file rights of them)."""

    path: str
    rights: int

    def access(self, *, is_dir: bool) -> int:
        return self.rights if is_dir else self.rights & FILE_RIGHTS


@dataclass(frozen=True, kw_only=True)
class SandboxPaths:
    """Where one attempt's run lives, as the agent sees it."""

    workdir: PurePath  # the snapshot and outputs/: the run's own
    run_dir: PurePath  # holds the stop-reason file and the hostfile (read only)
    scratch: PurePath  # the private tmp (TMPDIR, HOME)
    metrics_file: PurePath  # the metrics pipe (write only)
    runtime_dir: PurePath  # the run-context shim
    interpreter_roots: tuple[PurePath, ...]  # the venv and the Python it was made from
    shared_dirs: tuple[PurePath, ...] = ()  # the operator's writable dirs (ENV_RUN_WRITABLE)
    # a pipeline step's data (agents.pipeline_data): inputs read, outputs written; None: none
    data_in: PurePath | None = None
    data_out: PurePath | None = None


def sandbox_rules(paths: SandboxPaths) -> list[PathRule]:
    """Everything one run may do on the filesystem; the rest is refused."""
    rules = [PathRule(p, READ_EXEC) for p in SYSTEM_READ_EXEC]
    rules += [PathRule(p, READ) for p in SYSTEM_READ]
    rules += [
        PathRule("/proc", READ | WRITE_FILE),  # others' entries are closed by the domain
        PathRule("/dev", DEVICES),
        # shared memory (DataLoader workers, NCCL); a rule, not a temporary file
        PathRule("/dev/shm", WRITE_TREE),  # noqa: S108
        PathRule(str(paths.runtime_dir), READ_EXEC),
        PathRule(str(paths.run_dir), READ),
        PathRule(str(paths.metrics_file), WRITE_FILE),
        PathRule(str(paths.workdir), WRITE_TREE),
        PathRule(str(paths.scratch), WRITE_TREE),
    ]
    rules += [PathRule(str(p), READ_EXEC) for p in paths.interpreter_roots]
    rules += [PathRule(str(p), WRITE_TREE) for p in paths.shared_dirs]
    if paths.data_in is not None:
        rules.append(PathRule(str(paths.data_in), READ))
    if paths.data_out is not None:
        rules.append(PathRule(str(paths.data_out), WRITE_TREE))
    return rules


def interpreter_roots(
    python: PurePath, resolved: PurePath, venv_home: PurePath | None
) -> tuple[PurePath, ...]:
    """The trees a run's interpreter needs: its venv (``python`` is ``VENV/bin/python`` when
    ``venv_home``, the venv's ``home``, is known), the venv's base Python, and the
    installation the binary really is (``resolved``, links followed)."""
    roots: list[PurePath] = []
    if venv_home is not None:
        roots += [python.parent.parent, venv_home.parent]
    roots.append(resolved.parent.parent)
    return tuple(dict.fromkeys(roots))


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's variables a run starts from: all but :data:`STRIPPED_PREFIXES` and
    :data:`STRIPPED_NAMES`."""
    return {
        k: v
        for k, v in environ.items()
        if k not in STRIPPED_NAMES and not k.startswith(STRIPPED_PREFIXES)
    }


def isolation_mode(*, as_user: bool, landlock: bool) -> RunIsolation:
    """The mode an agent advertises: runs as another user, confined by Landlock, both, or
    neither."""
    if as_user:
        return "user+landlock" if landlock else "user"
    return "landlock" if landlock else "none"


class UidRangeError(ValueError):
    pass


def parse_uid_range(text: str) -> range:
    """``FIRST-LAST`` (inclusive) as a range of uids; raise UidRangeError saying the rule."""
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise UidRangeError(
            f"--run-uids {text!r}: give FIRST-LAST, e.g. 200000-200063 (one uid per run that "
            "runs at the same time)"
        )
    lo, hi = int(first), int(last)
    if lo < 1000 or hi < lo or hi > 2**31 - 2:
        raise UidRangeError(
            f"--run-uids {text!r}: FIRST must be >= 1000 (not a system account) and <= LAST"
        )
    return range(lo, hi + 1)


def free_uid(pool: Iterable[int], taken: Iterable[int]) -> int | None:
    """The lowest uid of ``pool`` no running attempt holds (None: all are taken)."""
    used = set(taken)
    return next((uid for uid in pool if uid not in used), None)
