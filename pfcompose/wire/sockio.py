"""Socket I/O on the descriptor: what trio's socket methods do, minus their per-call cost.

trio's ``SocketStream`` methods wrap every system call in a context manager, a
conflict detector and a schedule point of their own; measured, that was a fifth
of the forwarder's CPU per new connection. The data path (session reads and
writes, the local pumps) calls read(2)/writev(2) on the descriptor instead and
awaits trio's readiness waits only when the socket is not ready: one system call
and one schedule point when it is. The calls themselves are the platform's
(:mod:`pfcompose.platform.sockets`: the descriptor on POSIX, the socket object's
``recv``/``send`` on Windows or with ``PFCOMPOSE_PORTABLE``).

Errors read as trio's: a closed socket is ``trio.ClosedResourceError``, a broken
one ``trio.BrokenResourceError``. (Python ignores SIGPIPE, so EPIPE is an error
here, not a signal.)
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import trio

from pfcompose.platform.sockets import recv_now, reset_notsent_lowat, send_now, sendv_now
from pfcompose.wire.prefixed import PrefixedStream

__all__ = [
    "MAX_IOV",
    "read_now",
    "receive_some",
    "socket_of",
    "tune_socket",
    "write_now",
    "writev_all",
]

MAX_IOV = 512
"""Buffers per ``writev`` (Linux allows 1024)."""

Buffer = bytes | bytearray | memoryview


def _broken(exc: OSError) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def read_now(sock: trio.socket.SocketType, size: int) -> bytes | None:
    """What the socket holds now (``b""`` at EOF), or None if nothing yet."""
    try:
        return recv_now(sock, size)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _broken(exc) from exc


def write_now(sock: trio.socket.SocketType, data: Buffer) -> int:
    """Bytes of ``data`` the socket took now (0 if none)."""
    try:
        return send_now(sock, data)
    except BlockingIOError:
        return 0
    except OSError as exc:  # EPIPE, ECONNRESET
        raise _broken(exc) from exc


def socket_of(stream: trio.abc.Stream) -> trio.SocketStream | None:
    """The TCP stream to read directly, if ``stream`` is one (or wraps one with
    nothing left to replay)."""
    while isinstance(stream, PrefixedStream) and not stream.pending:
        stream = stream.transport
    return stream if isinstance(stream, trio.SocketStream) else None


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``, directly on the descriptor for TCP."""
    tcp = socket_of(stream) if isinstance(stream, trio.abc.Stream) else None
    if tcp is None:
        return await stream.receive_some(max_bytes)
    sock = tcp.socket
    await trio.lowlevel.checkpoint_if_cancelled()
    data = read_now(sock, max_bytes)
    if data is not None:
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data
    while True:
        await trio.lowlevel.wait_readable(sock)  # this call's schedule point
        data = read_now(sock, max_bytes)
        if data is not None:
            return data


async def writev_all(stream: trio.SocketStream, parts: Sequence[Buffer]) -> None:
    """writev(2) until every part is written; only the wait for writability is
    awaited, shielded (a cancelled write must never be cut short)."""
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    sock = stream.socket
    while views:
        try:
            sent = sendv_now(sock, views[:MAX_IOV])
        except BlockingIOError:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:
            raise _broken(exc) from exc
        while sent:
            first = len(views[0])
            if sent >= first:
                sent -= first
                del views[0]
            else:
                views[0] = views[0][sent:]
                sent = 0
    await trio.lowlevel.cancel_shielded_checkpoint()


def tune_socket(stream: trio.SocketStream) -> None:
    """Socket options for forwarded traffic, interactive as often as it is bulk.

    TCP_NODELAY (no Nagle delay for small writes), and TCP_NOTSENT_LOWAT back to
    the system's default: trio sets 16 KiB, which makes every write to a busy
    socket stop after ~16 KiB of unsent data and wait for writability again —
    measured, 200 parallel 1 MiB echoes spent a sixth more wall time that way.
    Go sets nothing of the kind.
    """
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    reset_notsent_lowat(stream)  # where the platform has it (pfcompose.platform.sockets)
