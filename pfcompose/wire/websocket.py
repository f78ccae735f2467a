"""WebSocket after the handshake: a message-level trio driver over wsproto, and a byte stream.

The HTTP handshake is done elsewhere (``upgrade.py``, with h11) so that both roles
can reproduce Go's exact requests, answers and error texts; what is left here is
RFC 6455 framing, which wsproto's frame-level :class:`wsproto.connection.Connection`
does sans-IO. :class:`WebSocketConnection` moves bytes between it and a trio
stream. :class:`WebSocketByteStream` carries an opaque byte stream in binary
messages, as the SPDY-in-WebSocket tunnel of KEP-4006 does (§4.3): message
boundaries mean nothing, close 1000 is EOF.

Buffering is bounded: the socket is read only when every event of the previous
read has been consumed, so a reader that stalls stops the socket (TCP
back-pressure) instead of growing memory.

Data path (docs/performance.md): whole binary messages are framed here, not by
wsproto, into one buffer masked in place (:func:`encode_binary_frame`) — wsproto's
client framing copied the payload five times and capped tunnel uploads near
220 MB/s. Incoming masked frames (server role) are unmasked in place by
:class:`LaneMasker`, installed as wsproto's masker. Control frames, text and the
closing handshake stay with wsproto.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import deque
from typing import Literal

import trio
import wsproto.frame_protocol
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from .errors import ProtocolError, WireError

RECEIVE_SIZE = 256 * 1024
"""Bytes asked of the transport per read: large reads keep per-byte overhead low."""
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Bound on one reassembled message (``receive_message``); larger ones close with 1009."""
SEND_CHUNK = 256 * 1024
"""WebSocketByteStream sends at most this much per message (Go: one message per Write)."""
CLOSE_TIMEOUT = 2.0
"""How long ``aclose`` waits for the peer's close frame before dropping the transport."""

NORMAL_CLOSURE = 1000
MESSAGE_TOO_BIG = 1009
ABNORMAL_CLOSURE = 1006

Role = Literal["client", "server"]

_XOR_TABLES = tuple(bytes(b ^ k for b in range(256)) for k in range(256))
_OP_BINARY_FIN = 0x82
_MASK_BIT = 0x80


def mask_in_place(buf: bytearray, start: int, key: bytes | bytearray) -> None:
    """XOR ``buf[start:]`` with the repeating 4-byte ``key``.

    Four strided ``translate`` passes (one per key byte) run in C; measured at
    ~640 MB/s for 256 KiB against ~450 MB/s for wsproto's masker, which copies
    twice more. Masking is an involution: the same call unmasks.
    """
    for lane in range(4):
        part = slice(start + lane, None, 4)
        buf[part] = buf[part].translate(_XOR_TABLES[key[lane]])


def encode_binary_frame(payload: bytes | bytearray | memoryview, *, mask: bool) -> bytearray:
    """One final binary frame (RFC 6455 §5.2) carrying ``payload``: a single copy.

    Clients mask with a fresh random key per frame (§5.3), as wsproto does.
    """
    n = len(payload)
    bit = _MASK_BIT if mask else 0
    if n <= 125:
        buf = bytearray((_OP_BINARY_FIN, n | bit))
    elif n <= 0xFFFF:
        buf = bytearray(struct.pack("!BBH", _OP_BINARY_FIN, 126 | bit, n))
    else:
        buf = bytearray(struct.pack("!BBQ", _OP_BINARY_FIN, 127 | bit, n))
    if mask:
        key = os.urandom(4)
        buf += key
        start = len(buf)
        buf += payload
        mask_in_place(buf, start, key)
    else:
        buf += payload
    return buf


class LaneMasker(wsproto.frame_protocol.XorMaskerSimple):
    """wsproto's incoming-frame masker, unmasking in place (same results, fewer copies).

    wsproto hands ``process`` a fresh ``bytearray`` slice of its buffer, so
    modifying it in place is safe; anything else is copied first.
    """

    def process(self, data: bytearray) -> bytearray:
        buf = data if isinstance(data, bytearray) else bytearray(data)
        if buf:
            key = self._masking_key
            mask_in_place(buf, 0, key)
            turn = len(buf) % 4
            self._masking_key = key[turn:] + key[:turn]
        return buf


# wsproto builds its per-frame masker from this module global (frame_protocol.py);
# LaneMasker keeps its interface and results, so replacing it is safe process-wide.
wsproto.frame_protocol.XorMaskerSimple = LaneMasker  # type: ignore[misc]


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
        self._ws = Connection(
            ConnectionType.CLIENT if role == "client" else ConnectionType.SERVER,
            trailing_data=bytes(initial_data),
        )
        self._receive_size = receive_size
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._pending: deque[BytesMessage | TextMessage] = deque()
        self._closed_remote = False  # a close frame arrived, or the transport ended
        self._closed_local = False  # aclose() was called
        self._transport_closed = False
        self._send_lock = trio.Lock()
        self._control: deque[bytes] = deque()
        self._receiving = False
        self._unprocessed = bool(initial_data)  # events from initial_data not yet taken

    # ---- sending -------------------------------------------------------------

    async def _send_frames(self, data: bytes | bytearray) -> None:
        async with self._send_lock:
            await self.transport.send_all(data)
            while self._control:  # pongs queued by the receiver while we were sending
                await self.transport.send_all(self._control.popleft())

    async def _send_control(self, data: bytes | bytearray) -> None:
        if self._send_lock.locked():
            self._control.append(bytes(data))  # the holder flushes it before releasing
        else:
            await self._send_frames(data)

    def _check_open_for_send(self) -> None:
        if self._closed_local:
            raise trio.ClosedResourceError("websocket was closed")
        if self._ws.state is not ConnectionState.OPEN:
            raise WebSocketClosed("websocket closed by peer", self.close_code, self.close_reason)

    async def send_message(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send one message: binary for bytes-like ``data``, text for ``str``."""
        self._check_open_for_send()
        if not isinstance(data, str):
            # The state check above is all wsproto would do for a whole binary message
            # (no extensions are ever negotiated), so frame it here without copies.
            await self._send_frames(encode_binary_frame(data, mask=self.role == "client"))
            return
        try:
            frame = self._ws.send(TextMessage(data=data))
        except LocalProtocolError:  # pragma: no cover - state checked above
            raise WebSocketClosed("websocket closed", self.close_code, self.close_reason) from None
        await self._send_frames(frame)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (tests and keepalive; neither Go side pings on its own, §4.3)."""
        self._check_open_for_send()
        await self._send_frames(self._ws.send(Ping(payload=payload)))

    # ---- receiving -----------------------------------------------------------

    async def _pump(self) -> None:
        """Read the transport once and process what it brought; data events are queued."""
        if self._closed_local:
            raise trio.ClosedResourceError("websocket was closed")
        try:
            data = await self.transport.receive_some(self._receive_size)
        except trio.BrokenResourceError as exc:
            self._ws.receive_data(None)
            await self._process_events()
            raise WebSocketClosed(f"websocket connection lost: {exc}", ABNORMAL_CLOSURE) from exc
        self._ws.receive_data(bytes(data) if data else None)
        await self._process_events()

    async def _process_events(self) -> None:
        for event in self._ws.events():
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
                ):  # OPEN: wsproto's own parse failure; answer with its code
                    # the peer may already be gone; the close is what matters
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self._send_control(self._ws.send(event.response()))
            # Pong: nothing to do

    async def receive_chunk(self) -> BytesMessage | TextMessage | None:
        """The next piece of message data as it arrived, or None once closed.

        Pieces are not whole messages: ``message_finished`` tells where one ends.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this websocket")
        self._receiving = True
        try:
            if self._unprocessed:
                self._unprocessed = False
                await self._process_events()
            while not self._pending:
                if self._closed_remote:
                    await trio.lowlevel.checkpoint()
                    return None
                await self._pump()
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._pending.popleft()
        finally:
            self._receiving = False

    async def receive_message(self) -> bytes | str | None:
        """The next whole message (bytes or str), or None once the peer closed.

        After None, ``close_code`` says how (1000 normal, 1006 transport lost…).
        """
        first = await self.receive_chunk()
        if first is None:
            return None
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
                self._ws.send(CloseConnection(code=code, reason=reason or None))
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
                await self._send_frames(frame)

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
        # one sender at a time: a split send_all must not interleave with another
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            view = memoryview(data)
            if len(view) <= SEND_CHUNK:
                await self.ws.send_message(view)
                return
            for start in range(0, len(view), SEND_CHUNK):
                await self.ws.send_message(view[start : start + SEND_CHUNK])
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
                chunk = await self.ws.receive_chunk()
                if chunk is None:
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
                if isinstance(chunk, TextMessage):
                    await self.ws.abort(1003, "invalid message type received")
                    raise ProtocolError("invalid message type received")
                if chunk.data:
                    data = bytes(chunk.data)
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
