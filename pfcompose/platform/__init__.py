"""The platform seam: every OS- or C-library-specific mechanism lives in this package.

pfcompose is measured on Linux, and part of its speed comes from calls other systems
lack: read(2)/writev(2) on socket descriptors, glibc's ``mallopt``/``malloc_trim``,
``memfd`` plus the ``execve`` hand-over to the lean runtime, ``TCP_NOTSENT_LOWAT``,
``flock``, ``poll(2)``, the open-files rlimit, AF_UNIX control sockets and process
sessions. The rest of the code asks this package (never ``os``/``fcntl``/``resource``
directly) and gets the fast path where the platform has it, else a portable path
with the same behaviour:

=====================  ==================================  =================================
mechanism              fast path                           portable path
=====================  ==================================  =================================
socket I/O             ``os.read``/``os.writev`` on the fd  the socket object's ``recv``/``send``
writability probe      ``select.poll`` (one poll(2))       "unknown": the caller awaits trio
heap tuning            glibc ``mallopt``/``malloc_trim``   nothing (the allocator's defaults)
runtime hand-over      ``memfd`` + ``execve`` (same PID)   the runtime runs in the same process
send buffer            ``TCP_NOTSENT_LOWAT`` = 0           left as the system set it
daemon lock            ``fcntl.flock`` / ``msvcrt``        O_EXCL pid file, stale if pid is gone
control channel        AF_UNIX socket, mode 0600           loopback TCP + per-project secret
open-files limit       ``resource.setrlimit``              nothing (Windows has no such limit)
detached daemon        ``setsid`` (POSIX)                  DETACHED_PROCESS (Windows)
=====================  ==================================  =================================

``PFCOMPOSE_PORTABLE=1`` forces every portable path at once (read once, at import),
so the portable paths are exercised on Linux by a second pass of the whole test
suite (``.ci/run``). This ``__init__`` imports nothing but
:mod:`pfcompose.platform.host` (``os`` and ``sys``): the lean runtime imports it.
"""

from __future__ import annotations

from pfcompose.platform.host import (
    MACOS,
    O_CLOEXEC,
    PORTABLE,
    PORTABLE_VARIABLE,
    WINDOWS,
    unsupported,
)

__all__ = ["MACOS", "O_CLOEXEC", "PORTABLE", "PORTABLE_VARIABLE", "WINDOWS", "capabilities",
           "unsupported"]  # fmt: skip


def capabilities() -> dict[str, bool]:
    """Which fast paths this process uses (True) — what tests and docs check."""
    from pfcompose.platform import ipc, limits, locks, memory, process, sockets

    return {
        "direct_fd_io": sockets.DIRECT_FD,
        "poll": sockets.HAS_POLL,
        "notsent_lowat": sockets.HAS_NOTSENT_LOWAT,
        "mallopt": memory.HAS_MALLOPT,
        "exec_handover": process.CAN_EXEC,
        "flock": locks.KERNEL_LOCK,
        "unix_control_socket": ipc.UNIX,
        "rlimit": limits.HAS_RLIMIT,
        "setsid": process.HAS_SETSID,
    }
