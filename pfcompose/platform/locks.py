"""An exclusive lock on a file, held while the daemon lives.

Fast path: a kernel lock the system drops when the process dies, however it dies
— ``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) — which makes the stale
socket test exact. Portable path (neither exists, or ``PFCOMPOSE_PORTABLE``): the
lock file is created with ``O_EXCL`` and holds the owner's pid; a file whose pid
no longer runs is stale and taken over. Either way the file's first line is the
holder's pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from types import ModuleType

from pfcompose.platform.host import PORTABLE, WINDOWS

__all__ = ["KERNEL_LOCK", "FileLock", "pid_alive"]


def _module(name: str) -> ModuleType | None:
    if PORTABLE:
        return None
    try:
        return __import__(name)
    except ImportError:
        return None


_fcntl = _module("fcntl")
_msvcrt = _module("msvcrt") if _fcntl is None else None
_MSVCRT_OFFSET = 1 << 30
KERNEL_LOCK = _fcntl is not None or _msvcrt is not None
"""The lock is the kernel's (``flock``/``msvcrt``), not a pid file."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a pid file's liveness test)."""
    if pid <= 0:
        return False
    if WINDOWS:  # os.kill(pid, 0) would terminate it there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but not been reaped (an orphan under a container's
    PID 1 may stay so): dead, for a lock. Only where /proc says so."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return False
    return stat_line[stat_line.rfind(b")") + 2 :][:1] == b"Z"


class FileLock:
    """Exclusive, non-blocking: :meth:`try_acquire` is False while another process holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        fd = self._kernel() if KERNEL_LOCK else self._pid_file()
        if fd is None:
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())  # for ``ls`` and for cleaning up after tests
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if not KERNEL_LOCK:
            with contextlib.suppress(OSError):
                self.path.unlink()  # ours: created with O_EXCL, never taken over while we live
        os.close(fd)

    def _kernel(self) -> int | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if _fcntl is not None:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            else:
                assert _msvcrt is not None
                # a byte far past the pid: a locked range cannot be read by others
                os.lseek(fd, _MSVCRT_OFFSET, os.SEEK_SET)
                _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
        except OSError as exc:  # BlockingIOError (flock), PermissionError/EACCES (msvcrt)
            os.close(fd)
            if isinstance(exc, BlockingIOError) or exc.errno in (errno.EACCES, errno.EDEADLK):
                return None
            raise
        return fd

    def _pid_file(self) -> int | None:
        for _ in range(2):  # once more after removing a stale file
            fd = self._create_with_pid()
            if fd is not None:
                return fd
            try:
                text = self.path.read_text().strip()
            except FileNotFoundError:
                continue  # released meanwhile
            except OSError:
                return None
            try:
                pid = int(text.splitlines()[0])
            except (ValueError, IndexError):
                pid = 0  # never written whole: stale
            if pid_alive(pid):
                return None
            # stale: rename first, so two takers never both remove a live holder's file
            grave = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
            try:
                os.replace(self.path, grave)
            except FileNotFoundError:
                continue
            if _pid_of(grave) != pid:  # someone took it over between read and rename: put back
                with contextlib.suppress(OSError):
                    os.replace(grave, self.path)
                return None
            with contextlib.suppress(OSError):
                grave.unlink()
        return None

    def _create_with_pid(self) -> int | None:
        """The lock file, created only if absent and never seen without its pid: the
        pid is written to a private name first, then hard-linked into place (atomic,
        fails if the file exists)."""
        fresh = self.path.with_name(f"{self.path.name}.{os.getpid()}.new")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     0o600)  # fmt: skip
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.link(fresh, self.path)
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                fresh.unlink()
        return fd


def _pid_of(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
