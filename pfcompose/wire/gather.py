"""Gathered writes: several buffers out as one write, without joining them first.

A SPDY DATA frame is an 8-byte header and a payload of up to 1 MiB. Written as two
``send_all`` calls, every frame costs two system calls and puts an 8-byte TCP
segment on the wire (sockets here have TCP_NODELAY), which the peer must wake up
for; joining the two would copy the payload. Go's framer writes both through one
buffered write. :func:`send_parts` does what fits the transport:

* plain TCP (also behind a :class:`~pfcompose.wire.prefixed.PrefixedStream`):
  ``sendmsg`` with every part as its own iovec — one system call, no copy;
* a WebSocket byte stream (the tunnel): its own ``send_parts``, messages that
  carry a header with the start of its payload, all in one gathered write;
* anything else (TLS): the parts joined, so each frame is one TLS record.
"""

from __future__ import annotations

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
    Transport failures surface as from ``send_all``: ``trio.BrokenResourceError``,
    ``trio.ClosedResourceError``.
    """
    if len(parts) == 1:
        await stream.send_all(parts[0])
        return
    inner = stream
    while isinstance(inner, PrefixedStream):
        inner = inner.transport
    if isinstance(inner, trio.SocketStream):
        await _sendmsg_all(inner, parts)
        return
    # (getattr, not a runtime-checkable Protocol: isinstance on one costs ~10 µs a call)
    sends_parts = getattr(inner, "send_parts", None)
    if sends_parts is not None:
        await sends_parts(parts)
    else:
        await stream.send_all(b"".join(parts))


async def _sendmsg_all(stream: trio.SocketStream, parts: Sequence[Buffer]) -> None:
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    sock = stream.socket
    while views:
        try:
            sent = await sock.sendmsg(views[:MAX_IOV])
        except OSError as exc:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("the socket was closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        while sent:
            first = len(views[0])
            if sent >= first:
                sent -= first
                del views[0]
            else:
                views[0] = views[0][sent:]
                sent = 0
