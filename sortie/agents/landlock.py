"""Landlock, the kernel's unprivileged sandbox, through its three system calls (ctypes).

The agent builds a ruleset in its own process (:func:`build_ruleset`: which paths, with which
rights; everything else is refused), and the run's child applies it to itself between fork and
exec (:func:`restrict_self`, a pre-exec hook), so a run costs two syscalls in the child and no
extra process. The rules themselves are plain data (``agents.isolation``).

A restricted process also cannot ptrace, nor read ``/proc/PID/environ`` of, any process outside
its own domain: two runs, each with a domain of its own, cannot read each other's environment.
From ABI 6 the domain is also *scoped*: no signal to, and no abstract UNIX socket of, a process
outside it (the agent, other runs).
"""

from __future__ import annotations

import ctypes
import os
import platform
import stat
from collections.abc import Iterable

from sortie.agents.isolation import PathRule, handled_access, scopes

# x86_64 and the generic syscall table (aarch64, riscv64) share these numbers
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_SUPPORTED_MACHINES = ("x86_64", "aarch64", "riscv64")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class LandlockError(OSError):
    """The ruleset could not be built (the message says which step and why)."""


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    if platform.machine() not in _SUPPORTED_MACHINES:
        return 0
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _attr_size(abi: int) -> int:
    """How much of the ruleset struct this ABI reads (newer fields must stay unsent)."""
    if abi >= 6:
        return ctypes.sizeof(_RulesetAttr)
    if abi >= 4:
        return 16
    return 8


def build_ruleset(rules: Iterable[PathRule], abi: int) -> int:
    """A Landlock ruleset fd (close-on-exec) allowing exactly ``rules``; raise LandlockError.

    A rule whose path does not exist (or cannot be opened) is left out: nothing beneath it is
    allowed."""
    handled = handled_access(abi)
    attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=0, scoped=scopes(abi))
    fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(_attr_size(abi)), 0)
    if fd < 0:
        raise LandlockError(ctypes.get_errno(), f"landlock_create_ruleset: {_errmsg()}")
    try:
        for rule in rules:
            _add_rule(int(fd), rule, handled)
    except BaseException:
        os.close(fd)
        raise
    return int(fd)


def _add_rule(ruleset_fd: int, rule: PathRule, handled: int) -> None:
    try:
        path_fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there to allow
    try:
        is_dir = stat.S_ISDIR(os.fstat(path_fd).st_mode)
        access = rule.access(is_dir=is_dir) & handled
        if not access:
            return
        attr = _PathBeneathAttr(allowed_access=access, parent_fd=path_fd)
        res = _libc.syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(attr), 0)
        if res < 0:
            raise LandlockError(ctypes.get_errno(), f"landlock_add_rule({rule.path}): {_errmsg()}")
    finally:
        os.close(path_fd)


def restrict_self(ruleset_fd: int) -> None:
    """Confine the calling process (and every process it starts) to the ruleset.

    Meant for a pre-exec hook: no allocation-heavy work, and on failure the child exits rather
    than run unconfined."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os._exit(126)
    if _libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
        os._exit(126)


def _errmsg() -> str:
    return os.strerror(ctypes.get_errno())
