"""WebSocket after the handshake: a message-level trio driver over wsproto, and a byte stream.

The HTTP handshake is done elsewhere (:mod:`.handshake`, with h11) so that both roles
can reproduce Go's exact requests, answers and error texts; what is left here is
RFC 6455 framing, which wsproto's frame-level :class:`wsproto.connection.Connection`
does sans-IO. :class:`WebSocketConnection` moves bytes between it and a trio
stream. :class:`WebSocketByteStream` carries an opaque byte stream in binary
messages, as the SPDY-in-WebSocket tunnel of KEP-4006 does (§4.3): message
boundaries mean nothing, close 1000 is EOF.

Buffering is bounded: the socket is read only when every event of the previous
read has been consumed, so a reader that stalls stops the socket (TCP
back-pressure) instead of growing memory.

Data path (docs/performance.md): binary frames are built and parsed by the sans-IO
codec :mod:`.ws_frames` (whole messages as buffers for one gathered write; received
binary frames unmasked with at most one copy per piece — kubectl sends a message
per SPDY frame header and per 32 KiB); every other frame goes through wsproto byte
for byte. wsproto itself is used as shipped: nothing of it is patched.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from .errors import ProtocolError, WireError
from .gather import send_parts
from .sockio import receive_some
from .ws_frames import (
    ABNORMAL_CLOSURE,
    MESSAGE_TOO_BIG,
    NORMAL_CLOSURE,
    Buffer,
    FrameSplitter,
    Piece,
    Role,
    binary_frame_parts,
    whole_bytes,
)

RECEIVE_SIZE = 256 * 1024
"""Bytes asked of the transport per read: large reads keep per-byte overhead low."""
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Bound on one reassembled message (``receive_message``); larger ones close with 1009."""
ALONE = 64 * 1024
"""A received piece at least this large is handed on by itself, not joined with others."""
COALESCE_LIMIT = 1024 * 1024
"""WebSocketByteStream.receive_some without ``max_bytes`` joins at most about this much."""
SEND_CHUNK = 256 * 1024
"""WebSocketByteStream sends at most this much per message (Go: one message per Write)."""
CLOSE_TIMEOUT = 2.0
"""How long ``aclose`` waits for the peer's close frame before dropping the transport."""


class WebSocketClosed(WireError, trio.BrokenResourceError):
    """The WebSocket ended other than by a normal close (or data was sent after one)."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class WebSocketConnection:
    """Messages over a trio stream whose WebSocket handshake is already done.

    One task may receive while another sends. Pings are answered from the
    receiving task; if a send is in progress the pong is queued behind it rather
    than waiting for it. ``initial_data`` are bytes read past the 101 response.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        role: Role,
        *,
        subprotocol: str | None = None,
        initial_data: bytes = b"",
        receive_size: int = RECEIVE_SIZE,
        max_message_size: int = MAX_MESSAGE_SIZE,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.role: Role = role
        self.subprotocol = subprotocol
        """The negotiated subprotocol (``""`` = none), as the handshake left it."""
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ws = Connection(ConnectionType.CLIENT if role == "client" else ConnectionType.SERVER)
        self._splitter = FrameSplitter(role)
        self._initial = bytes(initial_data)  # read by the first _pump
        self.receive_size = receive_size
        """Bytes asked of the transport per read (may be changed between reads)."""
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._pending: deque[Piece | BytesMessage | TextMessage] = deque()
        self._closed_remote = False  # a close frame arrived, or the transport ended
        self._closed_local = False  # aclose() was called
        self._transport_closed = False
        self._send_lock = trio.Lock()
        self._control: deque[bytes] = deque()
        self._receiving = False

    # ---- sending -------------------------------------------------------------

    async def _send_frames(self, parts: Sequence[Buffer]) -> None:
        """Write frames (as buffers) with one gathered write, then any queued pongs."""
        async with self._send_lock:
            await send_parts(self.transport, parts)
            while self._control:  # pongs queued by the receiver while we were sending
                await self.transport.send_all(self._control.popleft())

    async def _send_control(self, data: bytes | bytearray) -> None:
        if self._send_lock.locked():
            self._control.append(bytes(data))  # the holder flushes it before releasing
        else:
            await self._send_frames([data])

    def _check_open_for_send(self) -> None:
        if self._closed_local:
            raise trio.ClosedResourceError("websocket was closed")
        if self._ws.state is not ConnectionState.OPEN:
            raise WebSocketClosed("websocket closed by peer", self.close_code, self.close_reason)

    async def send_message(self, data: Buffer | str | Sequence[Buffer]) -> None:
        """Send one message: binary for bytes-like ``data`` (or a sequence of buffers,
        sent as one message), text for ``str``."""
        if isinstance(data, str):
            self._check_open_for_send()
            try:
                frame = self._ws.send(TextMessage(data=data))
            except LocalProtocolError:  # pragma: no cover - state checked above
                raise WebSocketClosed(
                    "websocket closed", self.close_code, self.close_reason
                ) from None
            await self._send_frames([frame])
            return
        await self.send_binary_messages(
            [[data] if isinstance(data, bytes | bytearray | memoryview) else data]
        )

    async def send_binary_messages(self, messages: Sequence[Sequence[Buffer]]) -> None:
        """Send binary messages, each given as its buffers, with one gathered write."""
        self._check_open_for_send()
        # The state check above is all wsproto would do for a whole binary message
        # (no extensions are ever negotiated), so frame them here without copies.
        mask = self.role == "client"
        parts: list[Buffer] = []
        for message in messages:
            parts += binary_frame_parts(message, mask=mask)
        await self._send_frames(parts)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (tests and keepalive; neither Go side pings on its own, §4.3)."""
        self._check_open_for_send()
        await self._send_frames([self._ws.send(Ping(payload=payload))])

    # ---- receiving -----------------------------------------------------------

    async def _pump(self) -> None:
        """Read the transport once and process what it brought; data events are queued."""
        if self._closed_local:
            raise trio.ClosedResourceError("websocket was closed")
        if self._initial:
            initial, self._initial = self._initial, b""
            await self._receive(initial)
            return
        try:
            data = await receive_some(self.transport, self.receive_size)
        except trio.BrokenResourceError as exc:
            self._ws.receive_data(None)
            await self._process_events()
            raise WebSocketClosed(f"websocket connection lost: {exc}", ABNORMAL_CLOSURE) from exc
        if not data:
            self._ws.receive_data(None)
            await self._process_events()
            return
        await self._receive(bytes(data))

    async def _receive(self, data: bytes) -> None:
        """Binary data is queued as the splitter decoded it; the rest goes through wsproto."""
        for item in self._splitter.feed(data):
            if isinstance(item, tuple):
                self._pending.append(item)
            elif isinstance(item, CloseConnection):
                await self._on_event(item)
            else:
                self._ws.receive_data(item)
                await self._process_events()

    async def _process_events(self) -> None:
        for event in self._ws.events():
            await self._on_event(event)

    async def _on_event(self, event: object) -> None:
        if isinstance(event, BytesMessage | TextMessage):
            self._pending.append(event)
        elif isinstance(event, Ping):
            await self._send_control(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._closed_remote = True
            if self.close_code is None:
                self.close_code = event.code
                self.close_reason = event.reason or ""
            if self._ws.state is ConnectionState.REMOTE_CLOSING or (
                self._ws.state is ConnectionState.OPEN
            ):  # OPEN: a parse failure (wsproto's or ours): answer with its code
                # the peer may already be gone; the close is what matters
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send_control(self._ws.send(event.response()))
        # Pong: nothing to do

    async def _next_item(self) -> Piece | BytesMessage | TextMessage | None:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this websocket")
        self._receiving = True
        try:
            while not self._pending:
                if self._closed_remote:
                    await trio.lowlevel.checkpoint()
                    return None
                await self._pump()
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._pending.popleft()
        finally:
            self._receiving = False

    async def receive_chunk(self) -> BytesMessage | TextMessage | None:
        """The next piece of message data as it arrived, or None once closed.

        Pieces are not whole messages: ``message_finished`` tells where one ends.
        """
        item = await self._next_item()
        if isinstance(item, tuple):
            view, frame_finished, message_finished = item
            return BytesMessage(
                data=whole_bytes(view),
                frame_finished=frame_finished,
                message_finished=message_finished,
            )
        return item

    async def receive_binary(self, budget: int) -> list[Buffer] | TextMessage | None:
        """Binary payload as it arrived, for byte streams (message boundaries ignored).

        The next piece, then every piece already decoded (no I/O) while ``budget``
        lasts; or the text message that comes first, or None once closed. One
        result per socket read, not per frame: kubectl frames every 32 KiB and
        every SPDY frame header.
        """
        item = await self._next_item()
        # (tuples first: isinstance against wsproto's events goes through ABCMeta)
        if isinstance(item, tuple):
            first: Buffer = item[0]
        elif item is None or isinstance(item, TextMessage):
            return item
        else:
            first = item.data
        pieces = [first]
        if len(first) >= ALONE:  # large enough alone: joining would copy it again
            return pieces
        budget -= len(first)
        pending = self._pending
        while budget > 0 and pending:
            ready = pending[0]
            if isinstance(ready, tuple):
                data: Buffer = ready[0]
            elif isinstance(ready, BytesMessage):
                data = ready.data
            else:
                break
            if len(data) >= ALONE:
                break
            pending.popleft()
            pieces.append(data)
            budget -= len(data)
        return pieces

    async def receive_message(self) -> bytes | str | None:
        """The next whole message (bytes or str), or None once the peer closed.

        After None, ``close_code`` says how (1000 normal, 1006 transport lost…).
        """
        first = await self.receive_chunk()
        if first is None:
            return None
        return await self.receive_message_rest(first)

    async def receive_message_rest(self, first: BytesMessage | TextMessage) -> bytes | str:
        """The whole message whose first piece :meth:`receive_chunk` returned."""
        if first.message_finished:
            return first.data if isinstance(first.data, str) else bytes(first.data)
        parts: list[bytes] | list[str] = [first.data]  # type: ignore[assignment]
        size = len(first.data)
        while True:
            chunk = await self.receive_chunk()
            if chunk is None:
                raise WebSocketClosed(
                    "websocket closed in the middle of a message", self.close_code
                )
            size += len(chunk.data)
            if size > self._max_message_size:
                await self.abort(MESSAGE_TOO_BIG, "message too big")
                raise ProtocolError(f"websocket message larger than {self._max_message_size} bytes")
            parts.append(chunk.data)  # type: ignore[arg-type]
            if chunk.message_finished:
                if isinstance(first.data, str):
                    return "".join(parts)  # type: ignore[arg-type]
                return b"".join(parts)  # type: ignore[arg-type]

    # ---- closing -------------------------------------------------------------

    async def send_close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake, leaving the receiving task to see the reply.

        Use this when another task is receiving: it gets ``None`` once the peer
        answers, and then calls :meth:`aclose` to drop the transport.
        """
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            await self._send_frames(
                [self._ws.send(CloseConnection(code=code, reason=reason or None))]
            )
        else:
            await trio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed_local or self._closed_remote

    async def _send_close_frame(self, code: int, reason: str) -> None:
        """Our close frame, if the state still allows one, within the close timeout."""
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            frame = self._ws.send(CloseConnection(code=code, reason=reason or None))
            with trio.move_on_after(self._close_timeout):
                await self._send_frames([frame])

    async def abort(self, code: int, reason: str = "") -> None:
        """Close after a protocol error: send the close frame if we can, don't wait."""
        if self._closed_local:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._send_close_frame(code, reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._closed_local = True
            self._pending.clear()
            await trio.aclose_forcefully(self.transport)

    async def aclose(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (if still possible), await the peer's briefly, drop the transport.

        Waiting for the peer's close frame keeps unread input from turning our
        TCP close into a reset that could swallow the close frame we sent.
        """
        if self._closed_local:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._send_close_frame(code, reason)
            if not self._closed_remote and not self._receiving:
                with trio.move_on_after(self._close_timeout):
                    while not self._closed_remote:
                        self._pending.clear()
                        await self._pump()
        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            pass
        finally:
            self._closed_local = True
            self._pending.clear()
            await trio.aclose_forcefully(self.transport)


class WebSocketByteStream(trio.abc.Stream):
    """A byte stream carried in binary WebSocket messages (transport B, both roles).

    ``receive_some`` returns ``b""`` after a close 1000; any other close code or a
    lost transport raises :class:`WebSocketClosed`, and a text message raises
    :class:`ProtocolError` (``invalid message type received``, as client-go).
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._rest = memoryview(b"")
        self._eof = False
        self._sending = False

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_parts([data])

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Send ``parts`` in order as messages of up to :data:`SEND_CHUNK` bytes, all
        in one gathered write: a SPDY header travels with the start of its payload."""
        # one sender at a time: a split send must not interleave with another
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            messages: list[list[Buffer]] = []
            message: list[Buffer] = []
            room = SEND_CHUNK
            for part in parts:
                view = memoryview(part).cast("B")
                while len(view) > room:
                    message.append(view[:room])
                    messages.append(message)
                    view = view[room:]
                    message, room = [], SEND_CHUNK
                if view:
                    message.append(view)
                    room -= len(view)
            if message:
                messages.append(message)
            if messages:
                await self.ws.send_binary_messages(messages)
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.ws.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._rest:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            while True:
                got = await self.ws.receive_binary(max_bytes or COALESCE_LIMIT)
                if got is None:
                    code = self.ws.close_code
                    if code == NORMAL_CLOSURE:
                        self._eof = True
                        return b""
                    raise WebSocketClosed(
                        f"websocket closed with code {code}"
                        + (f": {self.ws.close_reason}" if self.ws.close_reason else ""),
                        code,
                        self.ws.close_reason,
                    )
                if not isinstance(got, list):  # a text message
                    await self.ws.abort(1003, "invalid message type received")
                    raise ProtocolError("invalid message type received")
                data = whole_bytes(got[0]) if len(got) == 1 else b"".join(got)
                if data:
                    if max_bytes is None or len(data) <= max_bytes:
                        return data
                    self._rest = memoryview(data)
                    break
        n = len(self._rest) if max_bytes is None else max_bytes
        out, self._rest = self._rest[:n], self._rest[n:]
        await trio.lowlevel.checkpoint()
        return bytes(out)

    async def aclose(self) -> None:
        await self.ws.aclose(NORMAL_CLOSURE)
