"""Child processes that die with the process that started them, even when it is SIGKILLed.

``die_with_parent`` is a pre-exec hook (``subprocess.Popen(preexec_fn=...)``): the kernel
SIGKILLs the child the moment its parent dies (``PR_SET_PDEATHSIG``). `sortie up` starts its
broker with it, the agent each run's leader (agents.orphans), so a SIGKILLed parent leaves no
nats-server listening on its store and no run going on beside the next attempt.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Pre-exec hook: the kernel SIGKILLs this child when its parent dies.

    The signal follows the thread that forked, not the process: fork from a thread that lives
    as long as the parent (the main thread, or the event loop's). A parent that died before
    the hook ran has already made this child an orphan: it exits at once.
    """
    parent = os.getppid()
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
