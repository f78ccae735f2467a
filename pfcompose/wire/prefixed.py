"""A stream that first hands out bytes someone already read from it.

An HTTP parser reads the socket in large chunks, so the bytes that follow a
``101 Switching Protocols`` (a SPDY frame, a WebSocket message) may already sit in
its buffer when the upgrade completes. client-go loses them (§3.3, §13.12); we
don't: the upgrade returns the transport wrapped in a :class:`PrefixedStream`
that replays them before reading the socket again.
"""

from __future__ import annotations

import trio


class PrefixedStream(trio.abc.Stream):
    """``transport`` with ``prefix`` logically pushed back in front of its input."""

    def __init__(self, transport: trio.abc.Stream, prefix: bytes) -> None:
        self.transport = transport
        self._prefix = memoryview(bytes(prefix))

    @property
    def pending(self) -> int:
        """Bytes still to be replayed before the transport is read again."""
        return len(self._prefix)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:n], self._prefix[n:]
            return bytes(chunk)
        return await self.transport.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._prefix = memoryview(b"")
        await self.transport.aclose()


def with_prefix(transport: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    """Return ``transport`` itself when nothing was read ahead, else a PrefixedStream."""
    return PrefixedStream(transport, prefix) if prefix else transport
