"""Non-blocking socket calls without trio's per-call cost: the data path's primitives.

Fast path (POSIX, not ``PFCOMPOSE_PORTABLE``): read(2)/write(2)/writev(2) straight on
the descriptor, and one poll(2) to ask whether a socket is writable. Portable path
(Windows, where a socket is not a C-runtime descriptor; or forced): the stdlib socket
object trio wraps (``recv``/``send``, non-blocking as trio set it), several buffers
joined into one ``send``, and "not known" for writability so the caller awaits trio's
own wait. Same results, same errors (``BlockingIOError`` means "not now").
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from typing import Any

from pfcompose.platform.host import PORTABLE, WINDOWS

__all__ = [
    "DIRECT_FD",
    "HAS_NOTSENT_LOWAT",
    "HAS_POLL",
    "JOIN_LIMIT",
    "recv_now",
    "reset_notsent_lowat",
    "reuse_address",
    "send_now",
    "sendv_now",
    "writable_now",
]

Buffer = bytes | bytearray | memoryview

DIRECT_FD = (not PORTABLE and os.name == "posix" and hasattr(os, "writev")
             and hasattr(os, "read"))  # fmt: skip
"""read(2)/writev(2) on the socket's descriptor (else the socket object's methods)."""
HAS_NOTSENT_LOWAT = not PORTABLE and hasattr(socket, "TCP_NOTSENT_LOWAT")
JOIN_LIMIT = 64 * 1024
"""Portable ``sendv_now``: buffers are joined into one ``send`` up to this many bytes."""

try:
    import select as _select

    _poll = _select.poll  # absent on Windows
    _POLLOUT = _select.POLLOUT
    HAS_POLL = not PORTABLE
except (ImportError, AttributeError):
    HAS_POLL = False


def _fd(sock: Any) -> int:
    fd: int = sock.fileno()
    if fd == -1:
        import trio

        raise trio.ClosedResourceError("the socket was closed")
    return fd


def _std(sock: Any) -> socket.socket:
    """The stdlib socket a trio socket wraps (trio's ``_sock``; a stdlib one as is)."""
    inner = getattr(sock, "_sock", sock)
    if inner.fileno() == -1:
        import trio

        raise trio.ClosedResourceError("the socket was closed")
    return inner  # type: ignore[no-any-return]


if DIRECT_FD:

    def recv_now(sock: Any, size: int) -> bytes:
        """One read of at most ``size`` bytes; ``BlockingIOError`` if none are there."""
        return os.read(_fd(sock), size)

    def send_now(sock: Any, data: Buffer) -> int:
        """One write; bytes taken (``BlockingIOError`` if none can be)."""
        return os.write(_fd(sock), data)

    def sendv_now(sock: Any, views: Sequence[memoryview]) -> int:
        """One gathered write of ``views`` (writev(2)); bytes taken."""
        return os.writev(_fd(sock), views)

else:

    def recv_now(sock: Any, size: int) -> bytes:
        """One read of at most ``size`` bytes; ``BlockingIOError`` if none are there."""
        return _std(sock).recv(size)

    def send_now(sock: Any, data: Buffer) -> int:
        """One write; bytes taken (``BlockingIOError`` if none can be)."""
        return _std(sock).send(data)

    def sendv_now(sock: Any, views: Sequence[memoryview]) -> int:
        """One write of ``views``: small ones joined (one system call, as writev), a
        large first one alone (no copy of a big buffer)."""
        first = views[0]
        if len(views) == 1 or len(first) >= JOIN_LIMIT:
            return _std(sock).send(first)
        total, count = 0, 0
        for view in views:
            if total + len(view) > JOIN_LIMIT and count:
                break
            total += len(view)
            count += 1
        return _std(sock).send(b"".join(views[:count]))


def writable_now(sock: Any) -> bool:
    """True if ``sock`` can take bytes now (one poll(2), no task switch); False when
    not, or when the platform cannot say cheaply — the caller then awaits trio."""
    if not HAS_POLL:
        return False
    poller = _poll()
    poller.register(_fd(sock), _POLLOUT)
    return bool(poller.poll(0))


def reset_notsent_lowat(sock: Any) -> None:
    """TCP_NOTSENT_LOWAT back to the system default (trio sets 16 KiB) where it exists."""
    if HAS_NOTSENT_LOWAT:
        with contextlib.suppress(OSError):  # 0: the system default (unlimited)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)


def reuse_address(sock: Any) -> None:
    """What Go's ``net.Listen`` does before ``bind``: SO_REUSEADDR on POSIX, so a port
    whose last connections are in TIME_WAIT can be listened on again at once. Not on
    Windows, where SO_REUSEADDR lets a socket bind a port another socket is listening
    on (Go and trio leave it unset there: Windows already reuses TIME_WAIT ports)."""
    if not WINDOWS:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
