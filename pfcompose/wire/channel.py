"""Trio drivers of the kubelet's WebSocket channel protocol (transport C,
docs/wire-protocol.md §5).

The framing and checks are the sans-IO :class:`~.channel_codec.ChannelCodec`.
:class:`ChannelClient` and :class:`ChannelServer` are thin trio drivers over a
:class:`~pfcompose.wire.websocket.WebSocketConnection`; each exposes one
``trio.abc.Stream`` per port. Their ``run()`` pump must run in the caller's nursery.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import trio
from wsproto.events import BytesMessage, TextMessage

from .channel_codec import ChannelCodec, ChannelEvent, PortData, PortError, Role
from .errors import ProtocolError
from .websocket import WebSocketClosed, WebSocketConnection
from .ws_frames import NORMAL_CLOSURE

SEND_CHUNK = 256 * 1024
"""Largest payload per message we send (the kubelet reads up to 32 MiB frames)."""
BUFFER_LIMIT = 1024 * 1024
"""Per-port receive buffer; when full, the pump waits (the kubelet's pipe does the same)."""


class _ByteQueue:
    """Bounded FIFO of byte chunks between the pump and one port's reader.

    The bound is read at every ``put`` (its owner's ``buffer_limit``), so a
    forwarder can shrink it while many connections are open.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._eof = False
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    async def put(self, data: bytes) -> None:
        while self._size >= self._limit() and not self._eof:
            await self._writers.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._eof:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._readers.unpark_all()

    def close(self) -> None:
        """No more data will come: readers drain what is queued, then see EOF."""
        self._eof = True
        self._readers.unpark_all()
        self._writers.unpark_all()

    def discard(self) -> None:
        """The reader is gone: drop what is queued and accept (and drop) the rest."""
        self.close()
        self._chunks.clear()
        self._size = 0

    async def get(self, max_bytes: int | None) -> bytes:
        while not self._chunks:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            await self._readers.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        chunk = self._chunks.popleft()
        if max_bytes is not None and len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._size -= len(chunk)
        self._writers.unpark_all()
        return chunk


class ChannelStream(trio.abc.Stream):
    """One port's data channel as a byte stream (no half-close: the protocol has none)."""

    def __init__(self, owner: _ChannelDriver, index: int) -> None:
        self._owner = owner
        self.index = index
        self._queue = _ByteQueue(lambda: owner.buffer_limit)
        self._closed = False

    @property
    def port(self) -> int:
        return self._owner.ports[self.index]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("channel stream was closed")
        view = memoryview(data)
        channel = 2 * self.index
        for start in range(0, max(len(view), 1), SEND_CHUNK):
            piece = view[start : start + SEND_CHUNK]
            if piece:
                await self._owner.ws.send_message(self._owner.codec.encode_parts(channel, piece))
            else:
                await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._owner.ws.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("channel stream was closed")
        return await self._queue.get(max_bytes)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._queue.discard()
        await self._owner._stream_closed(self.index)


class _ChannelDriver:
    """What ChannelClient and ChannelServer share: the pump and the per-port streams."""

    def __init__(
        self,
        ws: WebSocketConnection,
        ports: Sequence[int],
        protocol: str | None,
        role: Role,
        buffer_limit: int,
    ) -> None:
        self.ws = ws
        self.ports = tuple(ports)
        self.buffer_limit = buffer_limit
        """Bytes each port's stream buffers before the pump waits (may change any time)."""
        chosen = ws.subprotocol if protocol is None else protocol
        self.codec = ChannelCodec(self.ports, chosen or "", role=role)
        self._streams = [ChannelStream(self, i) for i in range(len(self.ports))]
        self._done = [False] * len(self.ports)
        self._running = False

    def stream(self, index: int) -> ChannelStream:
        """The byte stream of the ``index``-th requested port."""
        return self._streams[index]

    async def run(self) -> None:
        """Read the WebSocket and dispatch to the ports until it closes.

        Returns after a normal close; raises ``ProtocolError`` (client role, after
        closing the WebSocket with 1002) or the WebSocket's error otherwise. Every
        port stream sees EOF when it returns.
        """
        self._running = True
        try:
            while True:
                try:
                    chunk = await self.ws.receive_chunk()
                except trio.ClosedResourceError:
                    return  # we closed it ourselves
                if chunk is None:
                    return
                data = chunk.data
                if (
                    not chunk.message_finished
                    and isinstance(data, bytes)
                    and data
                    and (index := self.codec.streamed_index(data[0])) is not None
                ):
                    await self._stream_message(index, chunk)
                    continue
                message = await self.ws.receive_message_rest(chunk)
                try:
                    events = self.codec.receive(message)
                except ProtocolError:
                    with trio.CancelScope(shield=True):
                        await self.ws.abort(1002, "protocol error")
                    raise
                for event in events:
                    await self._dispatch(event)
        finally:
            self._running = False
            for s in self._streams:
                s._queue.close()
            with trio.CancelScope(shield=True):
                # the close handshake is over (or we are cancelled): don't wait again
                await self.ws.abort(NORMAL_CLOSURE)

    async def _stream_message(self, index: int, first: BytesMessage | TextMessage) -> None:
        """Hand a data message on piece by piece, as the socket brought it.

        A peer's message may be large (this sandbox sends up to 256 KiB): held
        whole, one per connection, 1000 connections held hundreds of MiB. Pieces
        are at most one socket read (``ws.receive_size``).
        """
        queue = self._streams[index]._queue
        head = first.data
        if isinstance(head, str):  # pragma: no cover - the caller checked
            raise ProtocolError("a text message where data was expected")
        if len(head) > 1:
            await queue.put(bytes(head[1:]))
        while True:
            chunk = await self.ws.receive_chunk()
            if chunk is None:
                raise WebSocketClosed(
                    "websocket closed in the middle of a message", self.ws.close_code
                )
            data = chunk.data
            if isinstance(data, str):  # pragma: no cover - wsproto refuses text mid-message
                raise ProtocolError("text inside a binary message")
            if data:
                await queue.put(bytes(data))
            if chunk.message_finished:
                return

    async def _dispatch(self, event: ChannelEvent) -> None:
        if isinstance(event, PortData):
            await self._streams[event.index]._queue.put(event.data)

    async def _stream_closed(self, index: int) -> None:
        await self._finish(index)

    async def _finish(self, index: int) -> None:
        if self._done[index]:
            await trio.lowlevel.checkpoint()
            return
        self._done[index] = True
        if all(self._done):
            await self._close_all()

    async def _close_all(self) -> None:
        try:
            if self._running:
                await self.ws.send_close(NORMAL_CLOSURE)  # run() sees the reply and closes
            else:
                await self.ws.aclose(NORMAL_CLOSURE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer (or run()) closed it first: closed is what we wanted

    async def aclose(self) -> None:
        """Close the WebSocket (1000) now, whatever the ports are doing."""
        for s in self._streams:
            s._queue.close()
        await self._close_all()


class ChannelClient(_ChannelDriver):
    """Client side: one stream per requested port plus that port's error text.

    Usage::

        client = await dial_channel(endpoint, path, [8080])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            stream = client.stream(0)
            ...
            await stream.aclose()     # the WebSocket closes once every port's stream is closed

    A port's stream reaches EOF when the server writes error text for it
    (``error(index)`` then returns it) or when the WebSocket closes.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        ports: Sequence[int],
        protocol: str | None = None,
        *,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        super().__init__(ws, ports, protocol, "client", buffer_limit)
        self._errors: list[str | None] = [None] * len(self.ports)

    def error(self, index: int) -> str | None:
        """Error text the server sent for port ``index`` (``error forwarding port …``)."""
        return self._errors[index]

    async def _dispatch(self, event: ChannelEvent) -> None:
        if isinstance(event, PortError):
            self._errors[event.index] = (self._errors[event.index] or "") + event.text
            self._streams[event.index]._queue.close()
        else:
            await super()._dispatch(event)


class ChannelServer(_ChannelDriver):
    """Server side (the sandbox kubelet): the preamble, per-port streams, error text.

    Open with :meth:`open` (sends the preamble), run :meth:`run` in a nursery, serve
    each port on ``stream(i)``; end a port with ``finish(i, error)`` or by closing
    its stream. When every port is done the WebSocket closes with 1000 (§5).
    """

    @classmethod
    async def open(
        cls,
        ws: WebSocketConnection,
        ports: Sequence[int],
        protocol: str | None = None,
        *,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> ChannelServer:
        server = cls(ws, ports, protocol, "server", buffer_limit)
        for message in server.codec.preamble():
            await ws.send_message(message)
        return server

    async def send_error(self, index: int, text: str) -> None:
        """Write ``text`` on port ``index``'s error channel (one message)."""
        await self.ws.send_message(self.codec.encode(2 * index + 1, text.encode()))

    async def finish(self, index: int, error: str | None = None) -> None:
        """Port ``index`` is over (its pod connection ended), with optional error text."""
        if error is not None and not self._done[index]:
            await self.send_error(index, error)
        await self._finish(index)
