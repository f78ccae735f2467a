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

from collections.abc import Sequence

import trio

from pfcompose.wire.prefixed import PrefixedStream
from pfcompose.wire.sockio import writev_all

__all__ = ["send_parts"]

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
        inner = inner.transport  # (sending never replays anything)
    if isinstance(inner, trio.SocketStream):
        await writev_all(inner, parts)
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
