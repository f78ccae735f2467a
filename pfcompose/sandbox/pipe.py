"""An in-process TCP connection: how the kubelet reaches a pod process of this sandbox.

The kubelet and the pods' processes (``echo``, ``http``, ``blob``) share one
trio loop, so a loopback socket between them cost two system calls, two kernel
copies and an epoll round per chunk — a third of the sandbox's CPU per GiB
relayed (docs/performance.md). :func:`pipe_pair` connects them by passing the
chunks themselves instead, with TCP's observable behaviour kept:

* ``send_eof`` is a FIN: the peer reads what was sent, then ``b""``.
* ``aclose`` with unread input, or :meth:`PipeStream.abort`, is an RST (as Linux
  does on ``close`` with unread data, or with ``SO_LINGER`` 0): the peer's next
  receive or send raises :class:`trio.BrokenResourceError` from ``ECONNRESET``.
* A send to a peer that has closed raises the same (``EPIPE``).
* Each direction holds at most ``limit`` unread bytes: a sender waits beyond it
  (TCP's window), so a stalled reader stalls its writer, not memory.

The pods' own TCP listeners stay (``direct`` clients, ``target:`` ports, tests).
"""

from __future__ import annotations

import errno
from collections import deque

import trio

__all__ = ["DEFAULT_LIMIT", "PipeStream", "pipe_pair"]

DEFAULT_LIMIT = 4 * 1024 * 1024
"""Unread bytes one direction holds before its sender waits (a large socket buffer)."""

Chunk = bytes | memoryview


class _Direction:
    """One way of the connection: the chunks in flight and who may wait on them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[Chunk] = deque()
        self.buffered = 0
        self.eof = False  # the writer sent FIN
        self.reset = False  # the writer reset: reads fail
        self.reader_gone = False  # the reader closed: writes fail
        self.readable = trio.lowlevel.ParkingLot()
        self.writable = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self.readable.unpark_all()
        self.writable.unpark_all()


def _reset_error(what: str) -> trio.BrokenResourceError:
    error = trio.BrokenResourceError(what)
    error.__cause__ = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    return error


class PipeStream(trio.abc.HalfCloseableStream):
    """One end of :func:`pipe_pair`."""

    def __init__(self, inbox: _Direction, outbox: _Direction) -> None:
        self._in = inbox
        self._out = outbox
        self._closed = False

    # -- sending ---------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        out = self._out
        if self._closed or out.eof:
            raise trio.ClosedResourceError("pipe was closed for sending")
        if out.reader_gone or out.reset:
            await trio.lowlevel.checkpoint()
            raise _reset_error("the peer closed the connection")
        if isinstance(data, memoryview) and data.readonly and isinstance(data.obj, bytes):
            chunk: Chunk = data  # a view of immutable bytes: safe to hand over as is
        else:
            chunk = bytes(data)  # the caller may reuse its buffer
        if chunk:
            out.chunks.append(chunk)
            out.buffered += len(chunk)
            out.readable.unpark_all()
        if out.buffered <= out.limit:
            await trio.lowlevel.checkpoint()
            return
        while out.buffered > out.limit and not (out.reader_gone or self._closed):
            await out.writable.park()
        if self._closed:
            raise trio.ClosedResourceError("pipe was closed")
        if out.reader_gone:  # it reset with our data unread
            raise _reset_error("connection reset by peer")

    async def wait_send_all_might_not_block(self) -> None:
        out = self._out
        while out.buffered > out.limit and not (out.reader_gone or self._closed):
            await out.writable.park()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("pipe was closed")
        self._out.eof = True
        self._out.readable.unpark_all()
        await trio.lowlevel.checkpoint()

    # -- receiving -------------------------------------------------------------------
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """What is buffered (joined, up to ``max_bytes``), else wait for data, FIN or RST."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        inbox = self._in
        parked = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("pipe was closed")
            if inbox.reset:
                raise _reset_error("connection reset by peer")
            if inbox.chunks:
                data = self._take(inbox, max_bytes)
                if not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            if inbox.eof:
                await trio.lowlevel.checkpoint()
                return b""
            await inbox.readable.park()
            parked = True

    @staticmethod
    def _take(inbox: _Direction, max_bytes: int | None) -> bytes:
        budget = inbox.buffered if max_bytes is None else min(max_bytes, inbox.buffered)
        parts: list[Chunk] = []
        size = 0
        while size < budget:
            chunk = inbox.chunks[0]
            want = budget - size
            if len(chunk) <= want:
                inbox.chunks.popleft()
            else:
                view = memoryview(chunk)
                inbox.chunks[0] = view[want:]
                chunk = view[:want]
            parts.append(chunk)
            size += len(chunk)
        inbox.buffered -= size
        if inbox.buffered <= inbox.limit:
            inbox.writable.unpark_all()
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    # -- closing -----------------------------------------------------------------------
    def abort(self) -> None:
        """Close with RST (``SO_LINGER`` 0): the peer's next receive or send fails."""
        if self._closed:
            return
        self._closed = True
        self._out.reset = True
        self._in.reader_gone = True
        self._in.chunks.clear()
        self._in.buffered = 0
        self._in.wake()
        self._out.wake()

    async def aclose(self) -> None:
        """FIN, or RST when input was left unread (as Linux's ``close``)."""
        if not self._closed:
            if self._in.buffered:
                self.abort()
            else:
                self._closed = True
                self._out.eof = True
                self._in.reader_gone = True
                self._in.wake()
                self._out.wake()
        await trio.lowlevel.checkpoint()


def pipe_pair(limit: int = DEFAULT_LIMIT) -> tuple[PipeStream, PipeStream]:
    """Two connected ends: (the dialler's, the listener's)."""
    a_to_b, b_to_a = _Direction(limit), _Direction(limit)
    return PipeStream(b_to_a, a_to_b), PipeStream(a_to_b, b_to_a)
