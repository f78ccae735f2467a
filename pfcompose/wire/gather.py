"""Gathered writes: several buffers out as one write, without joining them first.

A SPDY DATA frame is an 8-byte header and a payload of up to 1 MiB. Written as two
``send_all`` calls, every frame costs two system calls and puts an 8-byte TCP
segment on the wire (sockets here have TCP_NODELAY), which the peer must wake up
for; joining the two would copy the payload. Go's framer writes both through one
buffered write. :func:`send_parts` does what fits the transport:

* plain TCP (also behind a :class:`~pfcompose.wire.prefixed.PrefixedStream`):
  ``writev`` with every part as its own iovec — one system call, no copy;
* a WebSocket byte stream (the tunnel): its own ``send_parts``, messages that
  carry a header with the start of its payload, all in one gathered write;
* anything else (TLS): the parts joined, so each frame is one TLS record.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from pfcompose.wire.prefixed import PrefixedStream

__all__ = ["MAX_IOV", "send_parts"]

MAX_IOV = 512
"""Buffers per ``sendmsg`` (Linux allows 1024)."""

Buffer = bytes | bytearray | memoryview


async def send_parts(stream: trio.abc.SendStream, parts: Sequence[Buffer]) -> None:
    """Write ``parts`` to ``stream`` in order, as few writes as the transport allows.

    The caller must be the only sender (the SPDY session holds its send lock).
    Cancellation never cuts a write short (a half-written frame would corrupt the
    framing of everything after it): what this awaits is shielded, and it is one
    schedule point when the transport takes everything at once. Transport failures
    surface as from ``send_all``: ``trio.BrokenResourceError``,
    ``trio.ClosedResourceError``.
    """
    inner = stream
    while isinstance(inner, PrefixedStream):
        inner = inner.transport
    if isinstance(inner, trio.SocketStream):
        await _writev_all(inner, parts)
        return
    with trio.CancelScope(shield=True):
        if len(parts) == 1:
            await stream.send_all(parts[0])
            return
        # (getattr, not a runtime-checkable Protocol: isinstance on one costs ~10 µs a call)
        sends_parts = getattr(inner, "send_parts", None)
        if sends_parts is not None:
            await sends_parts(parts)
        else:
            await stream.send_all(b"".join(parts))


async def _writev_all(stream: trio.SocketStream, parts: Sequence[Buffer]) -> None:
    """writev(2) on the socket's descriptor until every part is written.

    trio's socket methods wrap each call in a context manager and a schedule point
    of their own; here a write the socket takes at once costs one system call and
    one schedule point, and only the wait for writability is awaited (shielded).
    """
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    sock = stream.socket
    while views:
        fd = sock.fileno()
        if fd == -1:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            sent = os.writev(fd, views[:MAX_IOV])
        except BlockingIOError:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:  # EPIPE, ECONNRESET (SIGPIPE is ignored by Python)
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        while sent:
            first = len(views[0])
            if sent >= first:
                sent -= first
                del views[0]
            else:
                views[0] = views[0][sent:]
                sent = 0
    await trio.lowlevel.cancel_shielded_checkpoint()
