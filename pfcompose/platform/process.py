"""Processes: the lean runtime's hand-over and the detached daemon.

Fast path of ``up``'s hand-over (POSIX): ``execve`` into the lean interpreter — same
PID, terminal and signals — with the plan on an inherited memory file
(``memfd_create``, Linux; a 0600 temp file unlinked at once elsewhere). Portable
path (Windows, whose ``execv`` starts a new process and ends the old one; or
``PFCOMPOSE_PORTABLE``): the runtime runs inside the command-line process, as with
``PFCOMPOSE_LEAN=0`` — same behaviour, more resident memory.

The daemon leaves the terminal's session with ``setsid`` (``start_new_session``, all
of POSIX, so no portable variant is needed there); on Windows it is created with
``DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP`` (no console, no Ctrl-C of ours).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NoReturn

from pfcompose.platform.host import PORTABLE, WINDOWS, unsupported

__all__ = [
    "CAN_EXEC",
    "CREATE_NEW_PROCESS_GROUP",
    "DETACHED_PROCESS",
    "HAS_MEMFD",
    "HAS_SETSID",
    "RELAYED_SIGNALS",
    "child_group_options",
    "detach_options",
    "private_file",
    "replace_process",
    "signal_group",
    "terminal_foreground",
]  # fmt: skip

CAN_EXEC = not PORTABLE and os.name == "posix" and hasattr(os, "execv")
"""``up`` may replace itself with the lean runtime (same PID)."""
HAS_MEMFD = not PORTABLE and hasattr(os, "memfd_create")
HAS_SETSID = os.name == "posix" and hasattr(os, "setsid")
DETACHED_PROCESS = 0x00000008  # winbase.h; subprocess defines them only on Windows
CREATE_NEW_PROCESS_GROUP = 0x00000200
RELAYED_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""What ``run`` passes on to CMD (Windows has no SIGHUP)."""


def private_file() -> int:
    """A file only this process can reach, for the plan and its credentials: memory
    (``memfd_create``) where there is one, else a 0600 temp file unlinked at once."""
    if HAS_MEMFD:
        return os.memfd_create("pfcompose-up")
    fd, name = tempfile.mkstemp(prefix="pfcompose-up-")
    os.unlink(name)
    return fd


def replace_process(argv: Sequence[str]) -> NoReturn:
    """``execve`` into ``argv`` (same PID, terminal, signals); only where :data:`CAN_EXEC`."""
    if not CAN_EXEC:
        raise RuntimeError(unsupported("replacing a process in place (execve)"))
    os.execv(sys.executable, list(argv))


def detach_options(windows: bool = WINDOWS) -> dict[str, Any]:
    """``subprocess``/``trio.lowlevel.open_process`` options that detach the daemon
    from our terminal: a new session (POSIX) or a detached process group (Windows)."""
    if windows:
        return {"creationflags": DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


# -- run -- CMD: CMD in a process group of its own, signalled as a group ---------------


def child_group_options(own_group: bool, windows: bool = WINDOWS) -> dict[str, Any]:
    """``open_process`` options that make CMD lead a group of its own (if ``own_group``):
    ``setpgid(0, 0)`` on POSIX, ``CREATE_NEW_PROCESS_GROUP`` on Windows."""
    if not own_group:
        return {}
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"process_group": 0}


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the group CMD leads: ``killpg`` on POSIX; on Windows a group
    only takes CTRL_BREAK (for SIGINT), anything else ends the process."""
    if hasattr(os, "killpg"):
        os.killpg(pid, signum)
    elif signum == signal.SIGINT and hasattr(signal, "CTRL_BREAK_EVENT"):
        os.kill(pid, signal.CTRL_BREAK_EVENT)
    else:
        os.kill(pid, signal.SIGTERM)  # Windows: TerminateProcess


def terminal_foreground() -> bool:
    """Whether stdin is a terminal whose foreground process group is ours (POSIX job
    control; never on Windows, which has none)."""
    if not hasattr(os, "tcgetpgrp"):
        return False
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
