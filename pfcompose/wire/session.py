"""The trio driver of a SPDY/3 session: :class:`SpdyConnection` over a byte stream.

``open_session`` runs three background tasks in its own nursery: a reader, a
flusher for frames the reader must answer (PING echoes, RST of bad stream ids)
and, optionally, a keepalive pinger. Everything else is sent by the task that
asks for it, under one send lock, so concurrent streams share the transport
without a writer task per frame.

Data path: the reader takes large chunks from the transport (``read_size``),
parses all of them before it yields again (one task switch per read, not per
frame) and appends DATA payloads to per-stream buffers; a read that is all
payload is passed on uncopied, consecutive frames of a stream become one chunk.
Senders write up to ``SEND_BATCH`` bytes per turn of the lock, as 1 MiB DATA
frames whose payloads go to the transport without being copied. Writes are
shielded from cancellation (a half-written frame would corrupt every stream);
a write stuck on a peer that reads nothing ends when the session is aborted.

Back-pressure and head-of-line blocking: Go's spdystream has no flow control
(§7.1); its only brake is TCP. Two limits bound what the session holds for its
consumers, each overshot by at most the one socket read already in flight:

* ``max_buffer`` per stream: what one stream may hold (1 MiB, so a lone bulk
  stream keeps large buffers and full throughput);
* ``receive_budget`` for the session: what all its streams may hold together.
  As streams multiply, each one's share of the budget shrinks; with 1000 busy
  streams it is 16 KiB on average, not 1 MiB.

When either is reached the reader stops reading the socket until consumers
drain (a full stream: that stream's consumer; the budget: anyone's), so the
peer's writes block in TCP. That stalls **every** stream of the session,
exactly as a stalled reader stalls a Go peer: a stream nobody reads must be
reset or closed, never just abandoned. (Two peers that each write a lot before
reading can deadlock this way, with Go as with us.) The budget is deliberately
not split into shrinking per-stream limits: one consumer that stopped reading
would then stall the session as soon as it held its small share, although
others keep draining; with the budget it stalls the session only at
``max_buffer``, as before, or when the stalled streams hold the whole budget.

Keepalive: a ping every ``keepalive`` seconds; two in a row unanswered end the
session (``ping timeout``), except while our own reader is stopped by a full
buffer (the pong may be waiting behind it). A peer stalled by its own
head-of-line blocking for that long is, from here, indistinguishable from a
dead one.

Session end: local ``aclose`` (RST every open stream, GOAWAY, close), ``abort``,
GOAWAY received, EOF, a transport error, a protocol error, or two missed
keepalive pongs. Streams then keep handing out data they had already received;
after it, ``receive_some`` and ``send_all`` raise :class:`SessionLost`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import trio
from trio.lowlevel import ParkingLot

from pfcompose.wire.errors import ProtocolError, StreamOpenTimeout, WireError
from pfcompose.wire.gather import send_parts
from pfcompose.wire.sockio import receive_some
from pfcompose.wire.spdy import (
    DEFAULT_MAX_DATA_FRAME,
    DataReceived,
    GoAwayReceived,
    GoAwayStatus,
    HeadersReceived,
    LocalProtocolError,
    PingAcked,
    Role,
    RstStatus,
    SpdyConnection,
    StreamOpened,
    StreamRecord,
    StreamReplied,
    StreamResetReceived,
)


class StreamReset(WireError, trio.BrokenResourceError):
    """The peer reset the stream (RST_STREAM). ``status`` is the SPDY status code."""

    def __init__(self, message: str = "stream reset by peer", status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SessionLost(WireError, trio.BrokenResourceError):
    """The session under a stream ended: GOAWAY, EOF, transport error or ping timeout."""


DEFAULT_READ_SIZE = 256 * 1024
DEFAULT_MAX_BUFFER = 1 << 20
"""Most bytes one stream buffers for its consumer."""
DEFAULT_RECEIVE_BUDGET = 16 << 20
"""Most bytes all streams of a session buffer together (measured at 1000
concurrent connections: docs/performance.md)."""
DEFAULT_CLOSE_TIMEOUT = 2.0
SEND_BATCH = 1 << 20
"""Bytes one ``send_all`` writes per turn of the send lock (one transport write)."""
MAX_PENDING_ACCEPT = 1024
"""Streams the peer opened that may wait for ``accept_stream``; past it the reader
stops reading, as Go's does while its new-stream handler runs (no refusals:
1000 connections opened at once must all get through)."""
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _lost_reason(exc: BaseException) -> str:
    return f"connection lost: {exc}" if str(exc) else "connection lost"


class SpdyStream(trio.abc.HalfCloseableStream):
    """One SPDY stream as a trio stream.

    ``receive_some`` returns ``b""`` at the peer's FIN, raises :class:`StreamReset`
    after the peer's RST and :class:`SessionLost` when the session dies (data that
    had already arrived is handed out first). ``send_eof`` sends FIN; ``reset``
    sends RST_STREAM(CANCEL) unless FIN was already sent; ``aclose`` resets a
    stream that is not closed both ways, as client-go's wrapper does. After
    ``reset``/``aclose`` every call raises ``trio.ClosedResourceError``.

    State has one owner each. The protocol facts (replied, FIN sent, FIN received,
    reset by whom, with what status) are the connection core's
    :class:`~pfcompose.wire.spdy.StreamRecord`, which the stream reads (``record``)
    and never writes, so what a stream reports cannot drift from what the core
    does with its frames. The stream owns only its I/O: the receive buffer, the
    parking lot and event its waiters sleep on, its busy flags, and whether its
    user closed it (``reset``/``aclose``/``reject``: a trio-stream fact, not a
    protocol one; a reset after the session ended puts nothing on the wire).

    The session talks to a stream only through ``on_data``, ``on_replied`` and
    ``on_ended`` (it has just applied a frame to the record, or ended: buffer and
    wake) and reads ``buffered_bytes``, ``done``, ``stream_id``; the stream uses
    only the session's public methods (``SpdySession``, "the streams' interface").
    Neither touches the other's private attributes (tests/wire/test_stream_state.py).
    """

    def __init__(self, session: SpdySession, record: StreamRecord, headers: dict[str, str]) -> None:
        self._session = session
        self._record = record
        self.stream_id = record.stream_id
        self.headers = headers
        """Headers of the SYN_STREAM (ours or the peer's); the first value of each name."""
        self.reply_headers: dict[str, str] = {}
        self.local = record.local
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        self._buffered = 0
        self._readable = ParkingLot()
        self._settled = trio.Event()
        """Set when the SYN_REPLY is exchanged or the stream or session ended: what
        ``wait_replied`` and writers on an unreplied stream sleep on."""
        self._closed = False  # reset/aclose/reject was called: no more I/O
        self._receiving = False
        self._sending = False

    def __repr__(self) -> str:
        return f"<SpdyStream {self.stream_id} {self.headers!r}>"

    # ------------------------------------------------------------------ state

    @property
    def buffered_bytes(self) -> int:
        """Received bytes waiting for ``receive_some``."""
        return self._buffered

    @property
    def record(self) -> StreamRecord:
        """The connection core's record of this stream's protocol state (read it only)."""
        return self._record

    @property
    def done(self) -> bool:
        """Closed both ways, reset by the peer, or closed locally (reset/aclose/reject)."""
        rec = self._record
        return self._closed or rec.reset_by == "peer" or (rec.local_closed and rec.remote_closed)

    def _peer_reset_error(self) -> StreamReset:
        status = self._record.reset_status
        return StreamReset(f"stream reset by peer (status {status})", status)

    def _check_send(self) -> None:
        """May we send? (runs before every write, under the send lock too: kept short)"""
        rec = self._record
        if self._closed or rec.reset_by is not None or rec.local_closed or self._session.closed:
            self._refuse_send()

    def _refuse_send(self) -> None:
        """Raise why this stream cannot send, if it cannot (the checks in their order)."""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._record.reset_by == "peer":
            raise self._peer_reset_error()
        if self._session.closed:
            raise SessionLost(self._session.close_reason)
        if self._record.local_closed:
            raise trio.ClosedResourceError("send_eof was already called")

    async def _wait_replied(self) -> None:
        """Writes on a stream the peer opened wait for our SYN_REPLY (spdystream)."""
        if not self.local and not self._settled.is_set():
            await self._settled.wait()
            self._check_send()

    async def wait_replied(self, timeout: float = 30.0) -> None:
        """Wait for the SYN_REPLY of a stream we opened (see ``open_stream(wait=False)``).

        Raises :class:`StreamReset` if the peer refused it, :class:`StreamOpenTimeout`
        (after resetting the stream) if no reply came in time, :class:`SessionLost`.
        """
        session = self._session
        if not self._settled.is_set():
            try:
                with trio.move_on_after(timeout):
                    await self._settled.wait()
            except BaseException:
                self.reset()
                raise
        rec = self._record
        if rec.reset_by == "peer":
            session.forget(self)
            raise StreamReset("Stream reset", rec.reset_status)
        session.check_alive()
        if not self._settled.is_set():
            await self.aclose()
            raise StreamOpenTimeout("Timeout occurred")

    # ------------------------------------------------------------------ the session's interface
    # Called by the reader right after the core applied a frame to the record.

    def on_data(self, data: bytes) -> int:
        """Buffer received ``data`` and wake the reader (a FIN that came with it is
        already in the record); returns the bytes now buffered (the session checks
        its limit)."""
        if data and not self._closed:
            self._chunks.append(data)
            n = len(data)
            self._buffered += n
            self._session.buffer_added(n)
        self._readable.unpark_all()
        return self._buffered

    def on_replied(self, headers: dict[str, str], fin: bool) -> None:
        """The peer's SYN_REPLY arrived (``fin``: with its FIN): wake whoever waits for it."""
        self.reply_headers = headers
        if fin:
            self._readable.unpark_all()
        self._settled.set()

    def on_ended(self) -> None:
        """The peer reset the stream or the session ended: wake every waiter."""
        self._wake_all()

    def _wake_all(self) -> None:
        self._readable.unpark_all()
        self._settled.set()
        self._session.space_freed()

    def _discard(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self._session.buffer_dropped(self._buffered)
        self._buffered = 0

    # ------------------------------------------------------------------ receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if not await self._wait_data():
            return b""
        chunk = self._chunks[0]
        off = self._offset
        avail = len(chunk) - off
        if max_bytes is None or max_bytes >= avail:
            data = chunk if off == 0 else chunk[off:]
            self._advance(avail)
        else:
            data = chunk[off : off + max_bytes]
            self._advance(max_bytes)
        return data

    async def peek(self) -> memoryview:
        """The next received bytes, left in the buffer until :meth:`consume`.

        For a consumer that writes them straight to a socket: bytes the socket
        cannot take yet stay here, counted against the session's receive budget,
        instead of in a chunk the consumer holds. Empty at the peer's FIN; raises
        as ``receive_some`` does. Use the view before the next ``consume``.
        """
        if not await self._wait_data():
            return memoryview(b"")
        return memoryview(self._chunks[0])[self._offset :]

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes of what :meth:`peek` returned (0 after a reset)."""
        if not self._chunks:  # reset or closed since the peek: nothing is buffered
            return
        if not 0 <= n <= len(self._chunks[0]) - self._offset:
            raise ValueError("consume() beyond what peek() returned")
        if n:
            self._advance(n)

    async def _wait_data(self) -> bool:
        """Wait until bytes are buffered (True) or the peer's FIN is reached (False).

        One checkpoint per call: parking counts as it, otherwise a shielded one.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        parked = False  # parking was this call's checkpoint: no second task switch
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                if self._chunks:
                    if parked:
                        return True
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    parked = True
                    continue  # look again: the stream may have been reset meanwhile
                rec = self._record
                if rec.reset_by == "peer":
                    raise self._peer_reset_error()
                if rec.remote_closed:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return False
                if self._session.closed:
                    raise SessionLost(self._session.close_reason)
                await self._readable.park()
                parked = True
        finally:
            self._receiving = False

    def _advance(self, n: int) -> None:
        """``n`` bytes at the head of the buffer were handed out: account for them."""
        off = self._offset + n
        if off == len(self._chunks[0]):
            self._chunks.popleft()
            off = 0
        self._offset = off
        before = self._buffered
        self._buffered = before - n
        self._session.buffer_taken(before, n)

    # ------------------------------------------------------------------ sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_send()
            await self._wait_replied()
            view = memoryview(data)
            size = len(view)
            if not size:
                await trio.lowlevel.checkpoint()
                return
            await self._session.write_data(self.stream_id, view, self._check_send)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        if self._record.local_closed and not self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_send()
            await self._wait_replied()
            await self._session.write_fin(self.stream_id, self._check_send, self._fin_queued)
        finally:
            self._sending = False

    def send_eof_later(self) -> None:
        """Queue our FIN without writing it: it leaves with the session's next write.

        For a stream we will never write on (a port-forward error stream, which
        client-go closes as soon as it is replied): the FIN rides along with the
        data that follows instead of costing a write of its own; the flusher sends
        it if nothing else does. A no-op on a stream that can no longer send.
        """
        rec = self._record
        if rec.local_closed or self.done or self._session.closed or not rec.replied:
            return
        if self._sending:  # a FIN queued between two batches of a send_all would cut it
            raise trio.BusyResourceError("another task is sending on this stream")
        self._session.queue_fin(self.stream_id)
        self._fin_queued()

    def _fin_queued(self) -> None:
        """Our FIN is queued in the connection: the stream may be done with."""
        if self._record.remote_closed:
            self._session.forget(self)

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abandon the stream: RST_STREAM(status) unless we already sent FIN; drop buffers."""
        if self.done:
            return
        self._closed = True
        self._session.reset_stream(self, status)
        self._discard()
        self._wake_all()

    async def aclose(self) -> None:
        if not self.done:
            self.reset()
        self._closed = True
        self._discard()
        self._wake_all()
        self._session.forget(self)
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------ server role

    async def reply(self, headers: Mapping[str, str] | None = None) -> None:
        """Accept a stream the peer opened: SYN_REPLY (empty header block by default)."""
        if self.local:
            raise LocalProtocolError("only streams the peer opened are replied to")
        if self._settled.is_set():
            await trio.lowlevel.checkpoint()
            return
        await self._session.write_reply(self.stream_id, headers, self._check_reply, self._settled)

    def _check_reply(self) -> None:
        """May this stream still be replied to? (called under the session's send lock)"""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._record.reset_by == "peer":
            raise self._peer_reset_error()
        self._session.check_alive()

    async def reject(self, status: int = RstStatus.CANCEL) -> None:
        """Refuse a stream the peer opened: RST_STREAM(status), no SYN_REPLY (kubelet: CANCEL)."""
        self.reset(status)
        self._closed = True
        await self._session.flush()


class SpdySession:
    """A SPDY/3 session over a trio byte stream; create it with :func:`open_session`."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        role: Role,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        receive_budget: int = DEFAULT_RECEIVE_BUDGET,
        read_size: int = DEFAULT_READ_SIZE,
        max_data_frame: int = DEFAULT_MAX_DATA_FRAME,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if max_buffer < 1 or receive_budget < 1:
            raise ValueError("max_buffer and receive_budget must be positive")
        self.role: Role = role
        self._transport = transport
        self._conn = SpdyConnection(role, max_data_frame=max_data_frame)
        self._max_buffer = max_buffer
        self._receive_budget = receive_budget
        self._buffered = 0  # bytes held by every stream, for the receive budget
        self._paused = False  # the reader waits for consumers to drain
        self._space = ParkingLot()
        self._read_size = read_size
        self._send_batch = max(max_data_frame, SEND_BATCH)
        self._close_timeout = close_timeout
        self._send_lock = trio.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._accept_queue: deque[SpdyStream] = deque()
        self._acceptable = ParkingLot()
        self._pings: dict[int, trio.Event] = {}
        self._flush_wanted = False
        self._flush_lot = ParkingLot()
        self._full: set[SpdyStream] = set()  # streams that reached max_buffer
        self._stalls = 0  # times the reader stopped for space (keepalive must not blame the peer)
        self._refuse_status: int | None = None
        self._lost = False
        self._lost_event = trio.Event()
        self._done = trio.Event()
        self._bg_scope = trio.CancelScope()
        self.close_reason = ""
        """Why the session ended (empty while it runs): ``closed``, ``aborted``,
        ``goaway received (status N)``, ``connection closed by peer``,
        ``connection lost: …``, ``protocol error: …``, ``ping timeout``."""
        self.bytes_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self._lost

    @property
    def buffered_bytes(self) -> int:
        """Received bytes all streams hold for their consumers (bounded by ``receive_budget``)."""
        return self._buffered

    async def wait_closed(self) -> None:
        """Return once the session has ended, whatever the reason."""
        await self._lost_event.wait()

    def refuse_streams(self, status: int | None = RstStatus.REFUSED_STREAM) -> None:
        """Reset every stream the peer opens from now on with ``status`` (``None``: accept)."""
        self._refuse_status = status

    async def open_stream(
        self, headers: Mapping[str, str], timeout: float = 30.0, *, wait: bool = True
    ) -> SpdyStream:
        """Open a stream and wait for its SYN_REPLY (client-go waits 30 s).

        Raises :class:`StreamReset` if the peer refuses it, :class:`StreamOpenTimeout`
        (after resetting the stream) if no reply comes in time, :class:`SessionLost`.
        ``wait=False`` returns once the SYN_STREAM is written; call
        :meth:`SpdyStream.wait_replied` later.
        """
        (stream,) = await self.open_streams([headers])
        if wait:
            await stream.wait_replied(timeout)
        return stream

    async def open_streams(self, headers: Sequence[Mapping[str, str]]) -> list[SpdyStream]:
        """Open one stream per header set with a single write; await no reply.

        Call :meth:`SpdyStream.wait_replied` on each. A port-forward connection's
        error and data streams opened this way cost one write and one round trip,
        where client-go spends two of each. Raises :class:`SessionLost`.
        """
        self.check_alive()
        async with self._send_lock:
            self.check_alive()
            streams: list[SpdyStream] = []
            for fields in headers:
                try:
                    sid = self._conn.open_stream(fields)
                except LocalProtocolError as exc:
                    raise SessionLost(str(exc)) from None
                record = self._conn.stream_record(sid)
                assert record is not None  # (just opened)
                stream = SpdyStream(self, record, {k.lower(): v for k, v in fields.items()})
                self._streams[sid] = stream
                streams.append(stream)
            await self._flush_locked()
        return streams

    async def accept_stream(self) -> SpdyStream:
        """The next stream the peer opened (reply or reject it)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._accept_queue:
            self.check_alive()
            await self._acceptable.park()
        stream = self._accept_queue.popleft()
        self.space_freed()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    async def ping(self) -> float:
        """Send a PING and return the round-trip time in seconds."""
        self.check_alive()
        done = trio.Event()
        async with self._send_lock:
            self.check_alive()
            ping_id = self._conn.ping()
            self._pings[ping_id] = done
            start = trio.current_time()
            await self._flush_locked()
        await done.wait()
        if self._pings.pop(ping_id, None) is not None:  # woken by the session's end
            raise SessionLost(self.close_reason)
        return trio.current_time() - start

    async def aclose(self) -> None:
        """Graceful close: RST every open stream, GOAWAY, close the transport.

        Bounded by ``close_timeout``; a cancelled or stuck close becomes an abort.
        """
        if not self._lost:
            with trio.move_on_after(self._close_timeout):
                async with self._send_lock:
                    if not self._lost:
                        for stream in list(self._streams.values()):
                            if not stream.done:
                                self._conn.reset(stream.stream_id)
                        self._conn.goaway(GoAwayStatus.OK)
                        await self._flush_locked(raise_lost=False)
            self._lose("closed")
        with trio.CancelScope(shield=True):
            await self._done.wait()

    def abort(self) -> None:
        """Abortive close: drop the transport at once; streams raise SessionLost."""
        self._lose("aborted")

    # ------------------------------------------------------------------ the streams' interface
    # A SpdyStream uses its session only through these methods and ``closed`` /
    # ``close_reason``: the session owns the connection core (and through it every
    # stream's StreamRecord), the send lock and the receive budget; a stream owns
    # its buffer and its waiters. The session calls a stream only through
    # ``on_data``/``on_replied``/``on_ended`` and reads ``buffered_bytes``/``done``.

    def check_alive(self) -> None:
        """Raise :class:`SessionLost` if the session has ended."""
        if self._lost:
            raise SessionLost(self.close_reason)

    def buffer_added(self, n: int) -> None:
        """A stream buffered ``n`` received bytes (counted against the receive budget)."""
        self._buffered += n

    def buffer_taken(self, stream_before: int, n: int) -> None:
        """A consumer took ``n`` bytes of a stream that held ``stream_before``."""
        total = self._buffered
        self._buffered = total - n
        # wake a paused reader only when a limit it may be waiting on was just crossed
        if self._paused and (
            stream_before >= self._max_buffer > stream_before - n
            or total >= self._receive_budget > total - n
        ):
            self._space.unpark_all()

    def buffer_dropped(self, n: int) -> None:
        """A stream discarded the ``n`` bytes it held (reset or closed)."""
        self._buffered -= n
        self.space_freed()

    def space_freed(self) -> None:
        """A consumer took bytes or a stream ended: let a paused reader look again."""
        if self._paused:
            self._space.unpark_all()

    async def write_data(self, stream_id: int, view: memoryview, check: Callable[[], None]) -> None:
        """Send ``view`` on a stream, one transport write per turn of the send lock;
        ``check`` (the stream's may-I-send test) runs under the lock before each."""
        step = self._send_batch
        lock = self._send_lock
        for start in range(0, len(view), step):
            await trio.lowlevel.checkpoint_if_cancelled()
            # An uncontended lock is taken without a task switch: the write
            # below is this call's checkpoint (and yields once per batch).
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                check()
                self._conn.send_data(stream_id, view[start : start + step])
                await self._flush_locked()
            finally:
                lock.release()

    async def write_fin(
        self, stream_id: int, check: Callable[[], None], queued: Callable[[], None]
    ) -> None:
        """Send a stream's FIN now; ``queued`` runs once it is queued, before the write."""
        async with self._send_lock:
            check()
            self._conn.send_data(stream_id, b"", fin=True)
            queued()
            await self._flush_locked()

    def queue_fin(self, stream_id: int) -> None:
        """Queue a stream's FIN for the session's next write (the flusher's at the latest)."""
        self._conn.send_data(stream_id, b"", fin=True)
        self._kick()

    async def write_reply(
        self,
        stream_id: int,
        headers: Mapping[str, str] | None,
        check: Callable[[], None],
        replied: trio.Event,
    ) -> None:
        """Send the SYN_REPLY of a stream the peer opened; ``replied`` is set once queued."""
        async with self._send_lock:
            check()
            self._conn.reply(stream_id, headers)
            replied.set()
            await self._flush_locked()

    def reset_stream(self, stream: SpdyStream, status: int) -> None:
        """Reset (RST_STREAM unless our FIN was sent) and forget ``stream``."""
        if not self._lost and self._conn.reset(stream.stream_id, status):
            self._kick()
        self.forget(stream)

    def forget(self, stream: SpdyStream) -> None:
        """``stream`` is done: it takes no more input and counts no more as full."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._full.discard(stream)

    async def flush(self) -> None:
        """Write whatever the connection has queued (a checkpoint if nothing)."""
        if not self._conn.has_data_to_send or self._lost:
            await trio.lowlevel.checkpoint()
            return
        async with self._send_lock:
            await self._flush_locked(raise_lost=False)

    # ------------------------------------------------------------------ internals

    async def _flush_locked(self, *, raise_lost: bool = True) -> None:
        """Write whatever the connection queued; the caller holds the send lock."""
        # Large payloads go to the transport uncopied, gathered with their headers
        # into one write (wire/gather.py), which a cancellation never cuts short: a
        # frame cut short would corrupt the framing of every stream. A stuck write
        # ends when the session is aborted (the transport is closed under it).
        parts = self._conn.data_to_send_parts()
        if not parts:
            return
        try:
            await send_parts(self._transport, parts)
        except _TRANSPORT_ERRORS as exc:
            self._lose(_lost_reason(exc))
            if raise_lost:
                raise SessionLost(self.close_reason) from None
            return
        self.bytes_out += sum(len(part) for part in parts)

    def _kick(self) -> None:
        """Ask the flusher task to send what the reader (or a sync call) queued."""
        if not self._flush_wanted:
            self._flush_wanted = True
            self._flush_lot.unpark_all()

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.done:
            self.forget(stream)

    def _lose(self, reason: str) -> None:
        if self._lost:
            return
        self._lost = True
        self.close_reason = reason
        self._lost_event.set()
        for stream in list(self._streams.values()):
            stream.on_ended()
        self._streams.clear()
        self._full.clear()
        self._space.unpark_all()
        for event in self._pings.values():
            event.set()
        self._acceptable.unpark_all()
        self._flush_lot.unpark_all()
        self._bg_scope.cancel()

    # ------------------------------------------------------------------ background tasks

    async def _run(
        self,
        keepalive: float | None,
        initial_data: bytes,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self._bg_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, initial_data)
                    nursery.start_soon(self._flusher)
                    if keepalive is not None:
                        nursery.start_soon(self._keepalive, keepalive)
                    task_status.started()
        finally:
            self._lose("closed")
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._transport)
            self._done.set()

    async def _reader(self, initial_data: bytes) -> None:
        try:
            if initial_data:
                self._feed(initial_data)
            transport = self._transport
            read_size = self._read_size
            while not self._lost:
                if self._out_of_space():
                    await self._wait_for_space()
                    continue
                data = await receive_some(transport, read_size)
                if not data:
                    self._lose("connection closed by peer")
                    return
                self.bytes_in += len(data)
                self._feed(data)
        except ProtocolError as exc:
            # As the kubelet does: GOAWAY, then drop the connection (§6.7).
            self._conn.goaway(GoAwayStatus.OK)
            with trio.move_on_after(min(self._close_timeout, 1.0)):
                await self.flush()
            self._lose(f"protocol error: {exc}")
        except _TRANSPORT_ERRORS as exc:
            self._lose(_lost_reason(exc))

    def _out_of_space(self) -> bool:
        """Stop reading the socket: the budget is used up, a stream holds
        ``max_buffer``, or too many opened streams wait to be accepted."""
        if self._full:
            limit = self._max_buffer
            for stream in list(self._full):
                if stream.buffered_bytes < limit or stream.done:
                    self._full.discard(stream)
        return (
            bool(self._full)
            or self._buffered >= self._receive_budget
            or len(self._accept_queue) >= MAX_PENDING_ACCEPT
        )

    async def _wait_for_space(self) -> None:
        self._stalls += 1
        self._paused = True
        try:
            while self._out_of_space() and not self._lost:
                await self._space.park()
        finally:
            self._paused = False

    def _feed(self, data: bytes | bytearray) -> None:
        """Apply one batch of input; no awaits, so a whole socket read costs one task switch."""
        streams = self._streams
        limit = self._max_buffer
        for event in self._conn.receive_data(data):
            if isinstance(event, DataReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    if stream.on_data(event.data) >= limit:
                        self._full.add(stream)
                    if event.fin:
                        self._forget_if_done(stream)
            elif isinstance(event, StreamOpened):
                self._on_opened(event)
            elif isinstance(event, StreamReplied):
                self._on_replied(event)
            elif isinstance(event, StreamResetReceived):
                self._on_reset_received(event)
            elif isinstance(event, PingAcked):
                done = self._pings.pop(event.ping_id, None)
                if done is not None:
                    done.set()
            elif isinstance(event, GoAwayReceived):
                self._lose(f"goaway received (status {event.status})")
            elif isinstance(event, HeadersReceived):
                self._on_headers(event)
            # SETTINGS, WINDOW_UPDATE: nothing to do (spdystream ignores them)
        if self._conn.has_data_to_send:
            self._kick()

    def _on_replied(self, event: StreamReplied) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.on_replied(event.headers, event.fin)
            if event.fin:
                self._forget_if_done(stream)

    def _on_headers(self, event: HeadersReceived) -> None:
        """HEADERS carry nothing we use; with FIN they end the peer's side (as in
        spdystream), which the record already says: wake the reader to see it."""
        stream = self._streams.get(event.stream_id)
        if stream is not None and event.fin:
            stream.on_data(b"")  # no bytes: wakes the reader to see the FIN
            self._forget_if_done(stream)

    def _on_reset_received(self, event: StreamResetReceived) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if stream is not None:
            self._full.discard(stream)
            stream.on_ended()

    def _on_opened(self, event: StreamOpened) -> None:
        if self._refuse_status is not None:
            self._conn.reset(event.stream_id, self._refuse_status)
            return
        record = event.record
        assert record is not None  # (always set by SpdyConnection)
        stream = SpdyStream(self, record, event.headers)
        if not (event.unidirectional and event.fin):  # else closed both ways at once
            self._streams[event.stream_id] = stream
        self._accept_queue.append(stream)
        self._acceptable.unpark_all()

    async def _flusher(self) -> None:
        while True:
            while not self._flush_wanted:
                await self._flush_lot.park()
            self._flush_wanted = False
            # One turn later: a sender woken in the same turn writes first and takes
            # the queued frames along (a new connection's error-stream FIN rides
            # with its first data), so this write is often not needed at all.
            await trio.lowlevel.checkpoint()
            if not self._conn.has_data_to_send:
                continue
            async with self._send_lock:
                await self._flush_locked(raise_lost=False)

    async def _keepalive(self, interval: float) -> None:
        """Ping every ``interval`` s; two pings in a row left unanswered end the session."""
        missed = 0
        pending: int | None = None
        stalls = self._stalls
        while True:
            await trio.sleep(interval)
            unanswered = pending is not None and self._pings.pop(pending, None) is not None
            if unanswered and stalls == self._stalls and not self._paused:
                missed += 1
                if missed >= 2:
                    self._lose("ping timeout")
                    return
            elif not unanswered:
                missed = 0
            # (a pong may sit unread behind a full stream buffer: that is our
            # consumer's stall, not the peer's, so it is not counted as missed)
            stalls = self._stalls
            pending = self._conn.ping()
            self._pings[pending] = trio.Event()
            self._kick()


@asynccontextmanager
async def open_session(
    transport: trio.abc.Stream,
    role: Role,
    *,
    keepalive: float | None = None,
    initial_data: bytes = b"",
    max_buffer: int = DEFAULT_MAX_BUFFER,
    receive_budget: int = DEFAULT_RECEIVE_BUDGET,
    read_size: int = DEFAULT_READ_SIZE,
    max_data_frame: int = DEFAULT_MAX_DATA_FRAME,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
) -> AsyncIterator[SpdySession]:
    """Run a SPDY session over ``transport`` (which it then owns and closes).

    ``initial_data``: bytes that arrived glued to the upgrade response.
    ``keepalive``: seconds between pings (``None``: no pings; client-go uses 5 s
    on SPDY, 10 s in the WebSocket tunnel). ``max_buffer`` / ``receive_budget``:
    received bytes one stream / all streams may hold before the reader stops
    reading the socket. Leaving the block closes gracefully.
    """
    if keepalive is not None and not (keepalive > 0 and math.isfinite(keepalive)):
        raise ValueError("keepalive must be a positive number of seconds")
    session = SpdySession(
        transport,
        role,
        max_buffer=max_buffer,
        receive_budget=receive_budget,
        read_size=read_size,
        max_data_frame=max_data_frame,
        close_timeout=close_timeout,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(session._run, keepalive, initial_data)
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await session.aclose()
