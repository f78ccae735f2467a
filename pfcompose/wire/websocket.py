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
wsproto, as buffers for one gathered write (:func:`binary_frame_parts`), masked
in C (:mod:`.masking`) — wsproto's client framing copied the payload five times
and capped tunnel uploads near 220 MB/s. Received binary frames are parsed and
unmasked here too (:class:`FrameSplitter`: at most one copy per frame piece, a
few µs per frame, where wsproto cost tens of µs and three copies per message —
kubectl sends a message per SPDY frame header and per 32 KiB); every other frame
(text, control, close, anything malformed) is handed to wsproto byte for byte, so
its checks, errors and closing handshake are unchanged.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import deque
from collections.abc import Sequence
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
from .gather import send_parts
from .masking import mask_in_place, masked
from .sockio import receive_some

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

NORMAL_CLOSURE = 1000
MESSAGE_TOO_BIG = 1009
ABNORMAL_CLOSURE = 1006

Role = Literal["client", "server"]

_OP_BINARY_FIN = 0x82
_MASK_BIT = 0x80

Buffer = bytes | bytearray | memoryview


def binary_frame_parts(payload: Sequence[Buffer], *, mask: bool) -> list[Buffer]:
    """One final binary frame (RFC 6455 §5.2) carrying ``payload``, as buffers to write.

    The header (with the masking key) is the first buffer; the payload follows
    uncopied, or masked in C when ``mask`` (clients mask with a fresh random key
    per frame, §5.3, as wsproto does). Written with one gathered write
    (:func:`~.gather.send_parts`): joining the buffers would copy every payload
    byte once more, into a fresh allocation.
    """
    n = sum(len(part) for part in payload)
    bit = _MASK_BIT if mask else 0
    if n <= 125:
        header = bytes((_OP_BINARY_FIN, n | bit))
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", _OP_BINARY_FIN, 126 | bit, n)
    else:
        header = struct.pack("!BBQ", _OP_BINARY_FIN, 127 | bit, n)
    if not mask:
        return [header, *payload]
    key = os.urandom(4)
    out: list[Buffer] = [header + key]
    offset = 0
    for part in payload:  # the key continues from part to part
        turn = offset % 4
        out.append(masked(part, key[turn:] + key[:turn] if turn else key))
        offset += len(part)
    return out


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


_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE = 0x0, 0x1, 0x2, 0x8
_RSV_BITS = 0x70

Piece = tuple[memoryview, bool, bool]
"""Binary payload decoded by :class:`FrameSplitter`: (data, frame_finished, message_finished)."""


def _whole_bytes(piece: Buffer) -> bytes:
    """``piece`` as bytes: the object itself when it is a view of a whole ``bytes``
    (a payload unmasked here has a buffer of its own), else a copy."""
    if isinstance(piece, memoryview):
        owner = piece.obj
        if type(owner) is bytes and len(owner) == piece.nbytes:
            return owner
    return bytes(piece)


class FrameSplitter:
    """Sans-IO split of received bytes: binary messages decoded here, the rest for wsproto.

    :meth:`feed` returns, in order, :data:`Piece` tuples (binary payload, parsed
    and unmasked here) and ``bytes`` to pass to wsproto unchanged: text frames
    and their continuations, control frames, and — from the first frame it does
    not take as valid data on — everything (wsproto then reports the error as it
    always did). Its only verdict of its own is a new data frame inside a binary
    message it is assembling (wsproto's "expected CONTINUATION"), returned as a
    :class:`CloseConnection` with 1002, as wsproto does for its parse errors.

    Pieces are views of the read; a masked payload piece is unmasked in C into a
    buffer of its own (one copy per byte).
    """

    def __init__(self, role: Role) -> None:
        self._masked = role == "server"  # RFC 6455 §5.1: clients mask, servers do not
        self._head = b""  # a frame header split across reads
        self._left = 0  # payload bytes of the current frame still to come
        self._ours = False  # the current frame's payload is decoded here
        self._fin = False
        self._key = b""
        self._done = 0  # payload bytes of the current frame decoded so far
        self._binary_open = False  # a fragmented binary message we decode is open
        self._text_open = False  # a fragmented message wsproto decodes is open
        self._passthrough = False  # wsproto gets every byte from now on
        self._dead = False  # we closed with 1002: input is ignored

    def feed(self, data: bytes) -> list[Piece | bytes | CloseConnection]:
        out: list[Piece | bytes | CloseConnection] = []
        if self._dead:
            return out
        if self._passthrough:
            out.append(data)
            return out
        self._split(data, out)
        return out

    def _split(self, data: bytes, out: list[Piece | bytes | CloseConnection]) -> None:
        """Parse ``data`` into ``out``.

        Pieces are views of the read itself (immutable) when frames are not masked;
        a masked piece is unmasked in C into a new buffer of its own (one copy).
        """
        unmask = self._masked
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                if not self._ours:
                    out.append(data[pos : pos + take])
                    pos += take
                    continue
                piece = view[pos : pos + take]
                if unmask:
                    key, turn = self._key, self._done % 4
                    piece = memoryview(masked(piece, key[turn:] + key[:turn] if turn else key))
                self._done += take
                finished = not self._left
                out.append((piece, finished, finished and self._fin))
                pos += take
                continue
            if not self._head and not self._binary_open and not self._text_open:
                pos = self._whole_frames(data, pos, view, out)
                if pos >= end:
                    break
            # a frame boundary: the header, perhaps glued to a piece of the last read
            head = self._head
            hbuf, base = (data, pos) if not head else (head + data[pos : pos + 14], 0)
            header = _parse_header(hbuf, base, unmask)
            if header is None:  # incomplete: keep what we have (at most 13 bytes)
                self._head = bytes(hbuf[base:])
                return
            size, b0, length = header
            raw = hbuf[base : base + size]
            self._head = b""
            pos += size - len(head)  # the header bytes taken from this read
            route = self._route(b0, length)
            if route is None:  # wsproto's from here on (an error it will report)
                out.append(raw + data[pos:])
                self._passthrough = True
                return
            if route is not True and route is not False:  # our verdict: nothing more is read
                out.append(route)
                self._dead = True
                return
            self._left, self._done = length, 0
            self._ours = route
            self._fin = bool(b0 & 0x80)
            if route:
                self._key = raw[-4:] if unmask else b""
                if not length:
                    out.append((view[pos:pos], True, self._fin))
            else:
                out.append(raw)
                if b0 & 0x0F == _OP_CLOSE:  # nothing after a close frame is ours to read
                    if pos < end:
                        out.append(data[pos:])
                    self._passthrough = True
                    return

    def _whole_frames(self, data: bytes, pos: int, view: memoryview,
                      out: list[Piece | bytes | CloseConnection]) -> int:
        """The common case, with locals only: whole final binary frames (0x82), each
        entirely in this read; returns where the first other thing starts."""
        end = len(data)
        unmask = self._masked
        mask_bit = 0x80 if unmask else 0
        extra = 4 if unmask else 0
        while pos + 2 <= end:
            if data[pos] != _OP_BINARY_FIN:
                break
            b1 = data[pos + 1]
            if b1 & 0x80 != mask_bit:
                break
            length = b1 & 0x7F
            start = pos + 2 + extra
            if length == 126:
                start += 2
                if start > end:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length <= 125:
                    break
            elif length == 127:
                break  # ≥ 64 KiB in one frame: the general path
            stop = start + length
            if stop > end:
                break
            if unmask:
                out.append((memoryview(masked(view[start:stop], data[start - 4 : start])),
                            True, True))
            else:
                out.append((view[start:stop], True, True))
            pos = stop
        return pos

    def _route(self, b0: int, length: int) -> bool | CloseConnection | None:
        """True: decode here; False: wsproto's frame; None: wsproto's from here on."""
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if length < 0 or b0 & _RSV_BITS:
            return None
        if opcode == _OP_BINARY or (opcode == _OP_CONTINUATION and self._binary_open):
            if opcode == _OP_BINARY and self._binary_open:
                return CloseConnection(1002, "expected CONTINUATION, got <Opcode.BINARY: 2>")
            if opcode == _OP_BINARY and self._text_open:
                return None  # wsproto: expected CONTINUATION
            self._binary_open = not fin
            return True
        if opcode == _OP_TEXT and self._binary_open:
            return CloseConnection(1002, "expected CONTINUATION, got <Opcode.TEXT: 1>")
        if opcode in (_OP_TEXT, _OP_CONTINUATION):
            if opcode == _OP_CONTINUATION and not self._text_open:
                return None  # wsproto: unexpected CONTINUATION
            self._text_open = not fin
            return False
        if _OP_CLOSE <= opcode <= 0xA and fin and length <= 125:
            return False  # close, ping, pong: wsproto's
        return None  # reserved opcode, fragmented or oversized control frame


def _parse_header(buf: bytes, pos: int, masked: bool) -> tuple[int, int, int] | None:
    """(header size, first byte, payload length) of a frame at ``buf[pos]``; None: incomplete.

    A header that breaks RFC 6455's encoding rules (wrong mask bit, non-minimal
    or 64-bit-MSB lengths) yields length -1 so the caller hands it to wsproto.
    """
    avail = len(buf) - pos
    if avail < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    size = 6 if b1 & 0x80 else 2
    if length == 126:
        size += 2
        if avail < size:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        if length <= 125:
            length = -1
    elif length == 127:
        size += 8
        if avail < size:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        if length <= 0xFFFF or length >> 63:
            length = -1
    if avail < size:
        return None
    if bool(b1 & 0x80) is not masked:
        length = -1
    return size, b0, length


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
            ConnectionType.CLIENT if role == "client" else ConnectionType.SERVER
        )
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
            return BytesMessage(data=_whole_bytes(view), frame_finished=frame_finished,
                                message_finished=message_finished)
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
                data = _whole_bytes(got[0]) if len(got) == 1 else b"".join(got)
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
