"""SPDY/3 framing and connection state, sans-IO, as moby/spdystream speaks it.

Bytes in → events out, calls → bytes out; no sockets, no trio (h11/wsproto
style). The peers that matter are Go's spdystream (kubectl, client-go, the
kubelet), so where SPDY/3 and spdystream differ we follow spdystream
(docs/wire-protocol.md §6, §7, §13):

* one zlib context per direction for the whole connection, the SPDY/3
  dictionary, a ``Z_SYNC_FLUSH`` after every header block;
* fatal (:class:`ProtocolError`): unknown control frame types, malformed frame
  shapes, zero stream ids, uppercase or forbidden header names, a compressed
  payload that does not inflate to exactly one header block;
* an invalid incoming SYN_STREAM id gets ``RST_STREAM(PROTOCOL_ERROR)``;
* DATA for unknown streams, and on a locally created stream before its
  SYN_REPLY, is dropped silently; SETTINGS and WINDOW_UPDATE are parsed and
  otherwise ignored (there is no flow control);
* after GOAWAY is received no further input is processed.

The decoder never buffers DATA payloads: a DATA frame is handed out piecewise
as its bytes arrive, so a frame of any size costs no memory here. Control frames
are buffered whole, bounded by ``max_frame_payload`` (the 24-bit wire maximum by
default, like Go) plus the 8-byte frame header; inflated header blocks are
bounded by ``max_header_block``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from pfcompose.wire.errors import ProtocolError, WireError
from pfcompose.wire.spdy_dict import SPDY3_DICT

Role = Literal["client", "server"]

VERSION: Final = 3

# Control frame types (§6.2).
SYN_STREAM: Final = 1
SYN_REPLY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PING: Final = 6
GOAWAY: Final = 7
HEADERS: Final = 8
WINDOW_UPDATE: Final = 9

FLAG_FIN: Final = 0x01
FLAG_UNIDIRECTIONAL: Final = 0x02


class RstStatus(enum.IntEnum):
    """RST_STREAM status codes."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    """GOAWAY status codes."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


MAX_STREAM_ID: Final = 0x7FFFFFFF
MAX_FRAME_PAYLOAD: Final = 0xFFFFFF
"""The 24-bit length field's maximum, which Go accepts for any frame."""
DEFAULT_MAX_HEADER_BLOCK: Final = 1 << 20
DEFAULT_MAX_DATA_FRAME: Final = 1 << 20
"""Largest DATA frame we emit. Measured with benchmarks/spdy_throughput.py: CPU per
GB falls from 32 KiB to 1 MiB frames and is flat beyond; spdystream accepts any
frame up to 16 MiB (a 1 MiB frame is verified, §7.1)."""

_FORBIDDEN_REQUEST: Final = frozenset(
    {"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding"}
)
_FORBIDDEN_RESPONSE: Final = _FORBIDDEN_REQUEST - {"host"}

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_SYN_STREAM_HEAD = struct.Struct(">IIBB")
_CONTROL_HEAD = struct.Struct(">HHI")

_MAX_ENDED_STREAMS: Final = 1024
"""How many ended streams keep a visible CLOSED/RESET state (a bounded history)."""


class LocalProtocolError(WireError):
    """We asked for something the connection state does not allow (our bug, not the peer's)."""


class StreamState(enum.Enum):
    """Where a stream is in its life (SPDY/3 draft, its §2.3; docs/wire-protocol.md §6.3)."""

    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"
    RESET = "reset"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM). ``headers`` maps each name to its first value."""

    stream_id: int
    headers: dict[str, str]
    fin: bool = False
    unidirectional: bool = False
    priority: int = 0
    associated_stream_id: int = 0
    record: StreamRecord | None = field(default=None, compare=False, repr=False)
    """The connection's record of the new stream (always set by :class:`SpdyConnection`)."""


@dataclass(frozen=True, slots=True)
class StreamReplied:
    """The peer accepted a stream we opened (SYN_REPLY)."""

    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Stream data. One DATA frame may arrive as several events; ``fin`` is on the last."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class StreamResetReceived:
    """The peer reset a stream we knew (RST_STREAM)."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The peer echoed a ping we sent."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is going away; nothing after this frame is read."""

    last_good_stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class SettingsReceived:
    """SETTINGS, parsed and otherwise ignored. ``settings``: (flags, id, value) triples."""

    flags: int
    settings: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class WindowUpdateReceived:
    """WINDOW_UPDATE, parsed and otherwise ignored (no flow control, §7.1)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    """HEADERS on a stream we know (Kubernetes never sends it)."""

    stream_id: int
    headers: dict[str, str]
    fin: bool = False


Event = (
    StreamOpened
    | StreamReplied
    | DataReceived
    | StreamResetReceived
    | PingAcked
    | GoAwayReceived
    | SettingsReceived
    | WindowUpdateReceived
    | HeadersReceived
)


# --------------------------------------------------------------------------- frames


def control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    """One control frame: version 3, ``frame_type``, ``flags``, ``payload``."""
    return _CONTROL_HEAD.pack(0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def data_frame_header(stream_id: int, flags: int, length: int) -> bytes:
    """The 8 bytes in front of a DATA payload."""
    return _U32x2.pack(stream_id & MAX_STREAM_ID, (flags << 24) | length)


def encode_header_block(headers: Mapping[str, str]) -> bytes:
    """The uncompressed SPDY/3 name/value block; names lowercased as Go writes them.

    Names equal after lowercasing are merged, their values joined by NUL (how Go
    sends a multi-valued ``http.Header``).
    """
    merged: dict[bytes, list[bytes]] = {}
    for name, value in headers.items():
        key = name.lower().encode("utf-8", "surrogateescape")
        merged.setdefault(key, []).append(value.encode("utf-8", "surrogateescape"))
    parts = [_U32.pack(len(merged))]
    for key, values in merged.items():
        joined = b"\x00".join(values)
        parts += (_U32.pack(len(key)), key, _U32.pack(len(joined)), joined)
    return b"".join(parts)


def parse_header_block(
    block: bytes | bytearray | memoryview, forbidden: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Parse an uncompressed name/value block the way spdystream accepts it.

    Fatal: truncation, trailing bytes, an uppercase name, a ``forbidden`` name.
    Repeated names are merged (spdystream's duplicate check is ineffective, §6.4)
    and every value is split at NUL; the dict keeps the first value of each name,
    which is what Go's ``Header.Get`` returns.
    """
    view = memoryview(block)
    size = len(view)
    if size < 4:
        raise ProtocolError("truncated header block")
    (count,) = _U32.unpack_from(view, 0)
    if count > (size - 4) // 8:
        raise ProtocolError(f"header block claims {count} pairs in {size} bytes")
    headers: dict[str, str] = {}
    pos = 4
    for _ in range(count):
        fields: list[bytes] = []
        for _what in ("name", "value"):
            if size - pos < 4:
                raise ProtocolError("truncated header block")
            (length,) = _U32.unpack_from(view, pos)
            pos += 4
            if length > size - pos:
                raise ProtocolError("truncated header block")
            fields.append(bytes(view[pos : pos + length]))
            pos += length
        raw_name, raw_value = fields
        if raw_name != raw_name.lower():
            raise ProtocolError(f"header name {raw_name!r} is not lowercase")
        name = raw_name.decode("utf-8", "surrogateescape")
        if name in forbidden:
            raise ProtocolError(f"header {name!r} is not allowed in this frame")
        value = raw_value.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        headers.setdefault(name, value)
    if pos != size:
        raise ProtocolError("trailing bytes after the header block")
    return headers


HEADER_LEVEL = 7
"""zlib level of header blocks. Go writes level 9; level 7 has the same zlib header
(FLEVEL 3) and gave byte-identical blocks for every port-forward header set we
compared, at 4 µs a block instead of 13 (two blocks per new connection)."""


class HeaderCompressor:
    """The sending side's zlib stream (see :data:`HEADER_LEVEL`), one sync flush per block."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            HEADER_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICT
        )

    def compress(self, headers: Mapping[str, str]) -> bytes:
        block = encode_header_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving side's zlib stream; each frame must inflate to one bounded block."""

    def __init__(self, max_block: int = DEFAULT_MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(zdict=SPDY3_DICT)
        self._max = max_block

    def decompress(self, payload: bytes | bytearray | memoryview) -> bytes:
        try:
            block = self._z.decompress(payload, self._max + 1)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not inflate: {exc}") from None
        if len(block) > self._max or self._z.unconsumed_tail:
            raise ProtocolError(f"header block larger than {self._max} bytes")
        if self._z.eof:
            raise ProtocolError("header compression stream ended")
        return block


# --------------------------------------------------------------------------- connection


class StreamRecord:
    """What the connection knows of one stream: the one owner of its protocol state.

    Kept by :class:`SpdyConnection` and updated only by it, as frames are sent and
    parsed. A driver holds the record of each stream it serves (returned by
    :meth:`SpdyConnection.stream_record`, carried by :class:`StreamOpened`) and reads
    its facts from here instead of keeping copies that could drift. The record stays
    readable after the connection forgets the stream (closed both ways or reset):
    it then reads as :attr:`ended`.
    """

    __slots__ = (
        "local",
        "local_closed",
        "remote_closed",
        "replied",
        "reset_by",
        "reset_status",
        "stream_id",
    )

    def __init__(
        self, stream_id: int, local: bool, local_closed: bool = False, remote_closed: bool = False
    ) -> None:
        self.stream_id = stream_id
        self.local = local
        """We opened it (SYN_STREAM sent), rather than the peer."""
        self.replied = False
        """Local stream: the peer's SYN_REPLY arrived; remote stream: ours was queued."""
        self.local_closed = local_closed
        """We can send no more: our FIN was queued (or the peer opened it unidirectional)."""
        self.remote_closed = remote_closed
        """The peer sends no more: its FIN arrived (DATA, SYN_STREAM, SYN_REPLY or HEADERS)."""
        self.reset_by: Literal["local", "peer"] | None = None
        """Who ended the stream with RST_STREAM (``"local"``: :meth:`SpdyConnection.reset`,
        whether or not a frame was queued for it)."""
        self.reset_status = 0
        """The RST_STREAM status (0 while not reset; 0 is never a valid status)."""

    @property
    def ended(self) -> bool:
        """Closed both ways or reset: the connection has forgotten the stream."""
        return self.reset_by is not None or (self.local_closed and self.remote_closed)

    @property
    def state(self) -> StreamState:
        """The stream's state as :meth:`SpdyConnection.stream_state` reports it."""
        if self.reset_by is not None:
            return StreamState.RESET
        if self.local_closed:
            return StreamState.CLOSED if self.remote_closed else StreamState.HALF_CLOSED_LOCAL
        if self.remote_closed:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN

    def __repr__(self) -> str:
        return f"<StreamRecord {self.stream_id} {self.state.value}>"


class SpdyConnection:
    """One SPDY/3 connection, either role, without I/O.

    Feed received bytes to :meth:`receive_data` (split anywhere) and act on the
    events; call the sending methods and write :meth:`data_to_send` to the
    transport, in order. ``bytes``-like payloads handed to :meth:`send_data`
    must not be mutated until the next :meth:`data_to_send`.

    Each stream's protocol state lives in one :class:`StreamRecord`, which a
    driver reads (:meth:`stream_record`, :attr:`StreamOpened.record`) but never
    writes; :meth:`stream_state` also answers for recently ended streams.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_frame_payload: int = MAX_FRAME_PAYLOAD,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_data_frame: int = DEFAULT_MAX_DATA_FRAME,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        if not 12 <= max_frame_payload <= MAX_FRAME_PAYLOAD:
            raise ValueError("max_frame_payload must be within 12 .. 2**24-1")
        if not 1 <= max_data_frame <= MAX_FRAME_PAYLOAD:
            raise ValueError("max_data_frame must be within 1 .. 2**24-1")
        self.role: Role = role
        client = role == "client"
        self._next_stream_id = 1 if client else 2
        self._next_remote_id = 2 if client else 1  # spdystream's receivedStreamId
        self._next_ping_id = 1 if client else 2
        self._ping_parity = 1 if client else 0
        self._pings: set[int] = set()
        self._streams: dict[int, StreamRecord] = {}
        self._ended: OrderedDict[int, StreamState] = OrderedDict()
        self._out: list[bytes | memoryview] = []
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor(max_header_block)
        self._max_payload = max_frame_payload
        self._max_data_frame = max_data_frame
        self.goaway_sent = False
        self.goaway_received = False
        self._error: ProtocolError | None = None
        # Parser state: a partial frame header, a partial control frame, or the
        # remainder of a DATA payload being streamed out.
        self._state = _FRAME_HEAD  # which of _READERS parses the next bytes
        self._batch = _DataBatch(_NO_EVENTS, None, 0)
        self._head = bytearray()
        self._ctl: bytearray | None = None
        self._ctl_type = 0
        self._ctl_flags = 0
        self._ctl_len = 0
        self._data_sid = 0
        self._data_left = 0
        self._data_fin = False
        self._data_deliver = False

    # ------------------------------------------------------------------ queries

    @property
    def buffered_input(self) -> int:
        """Bytes of partial frames held by the decoder (≤ ``max_frame_payload`` + 8)."""
        return len(self._head) + (len(self._ctl) if self._ctl is not None else 0)

    @property
    def last_good_stream_id(self) -> int:
        """The id a GOAWAY names: the last remote stream accepted, or 0 (spdystream)."""
        return self._next_remote_id - 2 if self._next_remote_id > 2 else 0

    def stream_state(self, stream_id: int) -> StreamState | None:
        """A live or recently ended stream's state; ``None`` if never seen (or long gone)."""
        st = self._streams.get(stream_id)
        if st is None:
            return self._ended.get(stream_id)
        return st.state

    def stream_record(self, stream_id: int) -> StreamRecord | None:
        """The record of a live stream (``None`` once it ended: keep the one you hold)."""
        return self._streams.get(stream_id)

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call, in order."""
        out = self._out
        if not out:
            return b""
        self._out = []
        if len(out) == 1 and type(out[0]) is bytes:
            return out[0]
        return b"".join(out)

    def data_to_send_parts(self, copy_below: int = 64 * 1024) -> list[bytes | memoryview]:
        """Like :meth:`data_to_send`, for a writer that issues several writes.

        Payloads of ``copy_below`` bytes or more are handed out as they were given
        (no copy); everything between them is joined. Writing the parts in order
        puts the same bytes on the wire as :meth:`data_to_send`.
        """
        out = self._out
        self._out = []
        parts: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        for piece in out:
            if len(piece) >= copy_below:
                if small:
                    parts.append(b"".join(small))
                    small = []
                parts.append(piece)
            else:
                small.append(piece)
        if small:
            parts.append(b"".join(small))
        return parts

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out)

    # ------------------------------------------------------------------ sending

    def open_stream(self, headers: Mapping[str, str], fin: bool = False) -> int:
        """Queue a SYN_STREAM with the next id of our parity; return the id."""
        if self.goaway_sent or self.goaway_received:
            raise LocalProtocolError("session is going away")
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("unable to get new stream id")
        self._next_stream_id += 2
        block = self._compressor.compress(headers)
        payload = _SYN_STREAM_HEAD.pack(stream_id, 0, 0, 0) + block
        self._out.append(control_frame(SYN_STREAM, FLAG_FIN if fin else 0, payload))
        self._streams[stream_id] = StreamRecord(stream_id, local=True, local_closed=fin)
        return stream_id

    def reply(
        self, stream_id: int, headers: Mapping[str, str] | None = None, fin: bool = False
    ) -> None:
        """Queue the SYN_REPLY accepting a stream the peer opened."""
        st = self._streams.get(stream_id)
        if st is None or st.local or st.replied:
            raise LocalProtocolError(f"stream {stream_id} cannot be replied to")
        st.replied = True
        block = self._compressor.compress(headers or {})
        self._out.append(
            control_frame(SYN_REPLY, FLAG_FIN if fin else 0, _U32.pack(stream_id) + block)
        )
        if fin:
            self._local_fin(stream_id, st)

    def send_headers(self, stream_id: int, headers: Mapping[str, str], fin: bool = False) -> None:
        """Queue a HEADERS frame (a Go peer stalls on it, §13.6: for tests only)."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is not open for sending")
        block = self._compressor.compress(headers)
        self._out.append(
            control_frame(HEADERS, FLAG_FIN if fin else 0, _U32.pack(stream_id) + block)
        )
        if fin:
            self._local_fin(stream_id, st)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview = b"", fin: bool = False
    ) -> None:
        """Queue ``data`` as DATA frames of at most ``max_data_frame`` bytes; FIN on the last."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is not open for sending")
        if not st.local and not st.replied:
            raise LocalProtocolError(f"stream {stream_id} has not been replied to")
        view = memoryview(data)
        size = len(view)
        step = self._max_data_frame
        out = self._out
        if size <= step:
            if size == 0 and not fin:
                return
            out.append(data_frame_header(stream_id, FLAG_FIN if fin else 0, size))
            if size:
                out.append(view)
        else:
            for start in range(0, size, step):
                chunk = view[start : start + step]
                last = start + step >= size
                out.append(
                    data_frame_header(stream_id, FLAG_FIN if fin and last else 0, len(chunk))
                )
                out.append(chunk)
        if fin:
            self._local_fin(stream_id, st)

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> bool:
        """Forget a stream; queue RST_STREAM unless we already sent FIN (spdystream ``Reset``).

        Returns whether an RST_STREAM was queued.
        """
        st = self._streams.pop(stream_id, None)
        if st is None:
            return False
        st.reset_by, st.reset_status = "local", int(status)
        self._remember(stream_id, StreamState.RESET)
        if st.local_closed:
            return False
        self._out.append(control_frame(RST_STREAM, 0, _U32x2.pack(stream_id, int(status))))
        return True

    def ping(self) -> int:
        """Queue a PING with the next id of our parity; return the id."""
        ping_id = self._next_ping_id
        self._next_ping_id = ping_id - 0x7FFFFFFE if ping_id > 0x7FFFFFFE else ping_id + 2
        self._pings.add(ping_id)
        self._out.append(control_frame(PING, 0, _U32.pack(ping_id)))
        return ping_id

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Queue GOAWAY (once); from now on new remote streams are silently dropped."""
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self._out.append(
            control_frame(GOAWAY, 0, _U32x2.pack(self.last_good_stream_id, int(status)))
        )

    def _local_fin(self, stream_id: int, st: StreamRecord) -> None:
        st.local_closed = True
        if st.remote_closed:
            del self._streams[stream_id]
            self._remember(stream_id, StreamState.CLOSED)

    def _remote_fin(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            return
        st.remote_closed = True
        if st.local_closed:
            del self._streams[stream_id]
            self._remember(stream_id, StreamState.CLOSED)

    def _remember(self, stream_id: int, state: StreamState) -> None:
        ended = self._ended
        ended[stream_id] = state
        if len(ended) > _MAX_ENDED_STREAMS:
            ended.popitem(last=False)

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data`` (any slice of the byte stream) and return the events it completes.

        Raises :class:`ProtocolError` when the peer broke the protocol; the
        connection is then dead and every later call raises it again.
        """
        if self._error is not None:
            raise ProtocolError(str(self._error))
        if self.goaway_received:
            return []
        events: list[Event] = []
        try:
            self._parse(data, events)
        except ProtocolError as exc:
            self._error = exc
            raise
        return events

    def _parse(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        """Run the reader of the current parse state until the input is used up.

        Each reader (``_READERS``, indexed by ``self._state``) takes what it can
        from ``view[pos:]``, may change the state, and returns the new position:
        the shape of h11's ``_readers.py``.
        """
        whole = data if type(data) is bytes else None
        view = memoryview(data) if whole is not None else memoryview(data).cast("B")
        end = len(view)
        batch = self._batch  # one per connection: no allocation per read
        batch.events, batch.whole, batch.end = events, whole, end
        readers = _READERS
        pos = 0
        while pos < end and not self.goaway_received:
            pos = readers[self._state](self, view, pos, end, batch)
        batch.flush()
        batch.events, batch.whole = _NO_EVENTS, None  # hold no reference to this read

    # Per-state readers: (view, pos, end, batch) -> new pos.

    def _read_frame_head(self, view: memoryview, pos: int, end: int, batch: _DataBatch) -> int:
        """State HEAD: the 8-byte frame header (possibly split across reads)."""
        head = self._head
        if not head:
            pos = self._whole_data_frames(view, pos, end, batch)
            if pos >= end:
                return pos
        if head or end - pos < 8:
            take = min(8 - len(head), end - pos)
            head += view[pos : pos + take]
            pos += take
            if len(head) < 8:
                return pos
            word0, word1 = _U32x2.unpack(head)
            head.clear()
        else:
            word0, word1 = _U32x2.unpack_from(view, pos)
            pos += 8
        flags = word1 >> 24
        length = word1 & 0xFFFFFF
        if length > self._max_payload:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_payload}")
        if word0 & 0x80000000:
            return self._begin_control(word0 & 0xFFFF, flags, length, view, pos, end, batch)
        return self._begin_data(word0, flags, length, view, pos, end, batch)

    def _whole_data_frames(self, view: memoryview, pos: int, end: int, batch: _DataBatch) -> int:
        """The common case, with locals only: DATA frames with a payload, each whole in
        this read; returns where the first other thing starts (for the general path,
        which also raises on anything malformed)."""
        streams = self._streams
        parts = batch.parts
        unpack = _U32x2.unpack_from
        limit = self._max_payload
        while end - pos >= 8:
            sid, word1 = unpack(view, pos)
            length = word1 & 0xFFFFFF
            start = pos + 8
            if sid & 0x80000000 or not sid or not length or length > limit:
                break  # control frame, stream 0, empty or oversized DATA
            if end - start < length:
                break  # a DATA payload that continues in a later read
            st = streams.get(sid)
            if st is not None and (st.replied or not st.local) and not st.remote_closed:
                if parts and batch.sid != sid:
                    batch.flush()
                batch.sid = sid
                parts.append(view[start : start + length])
                if word1 & 0x01000000:  # FLAG_FIN
                    batch.flush(True)
                    self._remote_fin(sid)
            pos = start + length
        return pos

    def _begin_control(
        self, ftype: int, flags: int, length: int, view: memoryview, pos: int, end: int,
        batch: _DataBatch,
    ) -> int:  # fmt: skip
        """After a control frame header: handle the frame if whole, else buffer it."""
        _check_control_shape(ftype, flags, length)
        batch.flush()
        if end - pos >= length:
            self._control(ftype, flags, view[pos : pos + length], batch.events)
            return pos + length
        self._ctl_type, self._ctl_flags, self._ctl_len = ftype, flags, length
        self._ctl = bytearray(view[pos:end])
        self._state = _CONTROL_REST
        return end

    def _read_control_rest(self, view: memoryview, pos: int, end: int, batch: _DataBatch) -> int:
        """State CONTROL_REST: the rest of a control frame that arrived in pieces."""
        ctl = self._ctl
        assert ctl is not None
        take = min(self._ctl_len - len(ctl), end - pos)
        ctl += view[pos : pos + take]
        pos += take
        if len(ctl) < self._ctl_len:
            return pos
        self._ctl = None
        self._state = _FRAME_HEAD
        batch.flush()
        self._control(self._ctl_type, self._ctl_flags, memoryview(ctl), batch.events)
        return pos

    def _deliverable(self, sid: int) -> bool:
        """Whether DATA on ``sid`` is handed out (known, replied if ours, peer not done)."""
        st = self._streams.get(sid)
        return st is not None and (st.replied or not st.local) and not st.remote_closed

    def _begin_data(
        self, sid: int, flags: int, length: int, view: memoryview, pos: int, end: int,
        batch: _DataBatch,
    ) -> int:  # fmt: skip
        """After a DATA frame header: a whole frame is taken at once (the fast path);
        a longer one is streamed by :meth:`_read_data_rest`."""
        if sid == 0:
            raise ProtocolError("DATA frame with stream id 0")
        fin = bool(flags & FLAG_FIN)
        if length and end - pos >= length:
            if self._deliverable(sid):
                batch.add(sid, view[pos : pos + length])
                if fin:
                    batch.flush(True)
                    self._remote_fin(sid)
            return pos + length
        if length:
            self._data_sid, self._data_left = sid, length
            self._data_fin, self._data_deliver = fin, self._deliverable(sid)
            self._state = _DATA_REST
            return pos
        batch.flush()
        if fin and self._deliverable(sid):
            batch.events.append(DataReceived(sid, b"", True))
            self._remote_fin(sid)
        # zero-length DATA without FIN: ignored, as spdystream does
        return pos

    def _read_data_rest(self, view: memoryview, pos: int, end: int, batch: _DataBatch) -> int:
        """State DATA_REST: a DATA payload handed out piecewise as its bytes arrive."""
        left = self._data_left
        take = end - pos if end - pos < left else left
        left -= take
        self._data_left = left
        sid = self._data_sid
        if self._data_deliver and sid in self._streams:
            parts = batch.parts  # batch.add, inlined: this runs once per read of a big frame
            if parts and batch.sid != sid:
                batch.flush()
            batch.sid = sid
            parts.append(view[pos : pos + take])
            if self._data_fin and not left:
                batch.flush(True)
                self._remote_fin(sid)
        if not left:
            self._state = _FRAME_HEAD
        return pos + take

    # Control frames: one handler per type (``_CONTROL_HANDLERS``).

    def _control(self, ftype: int, flags: int, payload: memoryview, events: list[Event]) -> None:
        _CONTROL_HANDLERS[ftype](self, flags, payload, events)

    def _on_syn_stream_frame(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        sid, assoc, prio, _slot = _SYN_STREAM_HEAD.unpack_from(payload, 0)
        headers = self._headers(payload[10:], _FORBIDDEN_REQUEST)
        if sid == 0:
            raise ProtocolError("SYN_STREAM with stream id 0")
        self._on_syn_stream(sid, assoc, prio >> 5, flags, headers, events)

    def _on_syn_reply(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        (sid,) = _U32.unpack_from(payload, 0)
        headers = self._headers(payload[4:], _FORBIDDEN_RESPONSE)
        if sid == 0:
            raise ProtocolError("stream id 0")
        st = self._streams.get(sid)
        if st is None or not st.local or st.replied:
            return  # unknown, remote or duplicate: ignored (spdystream)
        st.replied = True
        fin = bool(flags & FLAG_FIN)
        events.append(StreamReplied(sid, headers, fin))
        if fin:
            self._remote_fin(sid)

    def _on_headers(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        (sid,) = _U32.unpack_from(payload, 0)
        headers = self._headers(payload[4:], _FORBIDDEN_RESPONSE if sid % 2 else _FORBIDDEN_REQUEST)
        if sid == 0:
            raise ProtocolError("stream id 0")
        st = self._streams.get(sid)
        if st is None or not st.replied:
            return
        fin = bool(flags & FLAG_FIN)
        events.append(HeadersReceived(sid, headers, fin))
        if fin:
            self._remote_fin(sid)

    def _on_rst_stream(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        sid, status = _U32x2.unpack_from(payload, 0)
        if status == 0:
            raise ProtocolError("RST_STREAM with status 0")
        if sid == 0:
            raise ProtocolError("RST_STREAM with stream id 0")
        st = self._streams.pop(sid, None)
        if st is not None:
            st.reset_by, st.reset_status = "peer", status
            self._remember(sid, StreamState.RESET)
            events.append(StreamResetReceived(sid, status))

    def _on_settings(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        (count,) = _U32.unpack_from(payload, 0)
        if len(payload) != 4 + 8 * count:
            raise ProtocolError("SETTINGS length does not match its entry count")
        entries = []
        for i in range(count):
            word, value = _U32x2.unpack_from(payload, 4 + 8 * i)
            entries.append((word >> 24, word & 0xFFFFFF, value))
        events.append(SettingsReceived(flags, tuple(entries)))

    def _on_ping(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        (ping_id,) = _U32.unpack_from(payload, 0)
        if ping_id == 0:
            raise ProtocolError("PING with id 0")
        if ping_id & 1 != self._ping_parity:
            self._out.append(control_frame(PING, 0, bytes(payload)))
        elif ping_id in self._pings:
            self._pings.discard(ping_id)
            events.append(PingAcked(ping_id))

    def _on_goaway(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        last, status = _U32x2.unpack_from(payload, 0)
        self.goaway_received = True
        events.append(GoAwayReceived(last, status))

    def _on_window_update(self, flags: int, payload: memoryview, events: list[Event]) -> None:
        sid, delta = _U32x2.unpack_from(payload, 0)
        events.append(WindowUpdateReceived(sid, delta & MAX_STREAM_ID))

    def _headers(self, compressed: memoryview, forbidden: frozenset[str]) -> dict[str, str]:
        return parse_header_block(self._decompressor.decompress(compressed), forbidden)

    def _on_syn_stream(
        self, sid: int, assoc: int, priority: int, flags: int, headers: dict[str, str],
        events: list[Event],
    ) -> None:  # fmt: skip
        if self.goaway_sent or self.goaway_received:
            return  # silently dropped after GOAWAY
        if sid > MAX_STREAM_ID or sid < self._next_remote_id or sid in self._streams:
            self._out.append(
                control_frame(RST_STREAM, 0, _U32x2.pack(sid, RstStatus.PROTOCOL_ERROR))
            )
            return
        self._next_remote_id = sid + 2
        fin = bool(flags & FLAG_FIN)
        uni = bool(flags & FLAG_UNIDIRECTIONAL)
        record = StreamRecord(sid, local=False, local_closed=uni, remote_closed=fin)
        if uni and fin:
            self._remember(sid, StreamState.CLOSED)
        else:
            self._streams[sid] = record
        events.append(StreamOpened(sid, headers, fin, uni, priority, assoc, record))


_Reader = Callable[[SpdyConnection, memoryview, int, int, "_DataBatch"], int]
_FRAME_HEAD, _CONTROL_REST, _DATA_REST = 0, 1, 2
"""Parse states: between frames, inside a buffered control frame, inside a DATA payload."""
_READERS: Final[tuple[_Reader, ...]] = (
    SpdyConnection._read_frame_head,
    SpdyConnection._read_control_rest,
    SpdyConnection._read_data_rest,
)
"""The reader of each parse state, indexed by the state."""

_ControlHandler = Callable[[SpdyConnection, int, memoryview, list[Event]], None]
_CONTROL_HANDLERS: Final[dict[int, _ControlHandler]] = {
    SYN_STREAM: SpdyConnection._on_syn_stream_frame,
    SYN_REPLY: SpdyConnection._on_syn_reply,
    RST_STREAM: SpdyConnection._on_rst_stream,
    SETTINGS: SpdyConnection._on_settings,
    PING: SpdyConnection._on_ping,
    GOAWAY: SpdyConnection._on_goaway,
    HEADERS: SpdyConnection._on_headers,
    WINDOW_UPDATE: SpdyConnection._on_window_update,
}
"""Control frame type → handler (the type was checked by :func:`_check_control_shape`)."""


class _DataBatch:
    """The DATA pieces of one ``receive_data`` call, merged into as few events as possible.

    Payload pieces of consecutive DATA frames of one stream become one
    :class:`DataReceived` (one copy, one wake-up) however small the peer's frames.
    """

    __slots__ = ("end", "events", "parts", "sid", "whole")

    def __init__(self, events: list[Event], whole: bytes | None, end: int) -> None:
        self.events = events
        self.whole = whole  # the read itself, when it is bytes: passed on uncopied
        self.end = end
        self.parts: list[memoryview] = []
        self.sid = 0

    def add(self, sid: int, piece: memoryview) -> None:
        if self.parts and self.sid != sid:
            self.flush()
        self.sid = sid
        self.parts.append(piece)

    def flush(self, fin: bool = False) -> None:
        """One DataReceived for the pieces held; a read that was all payload is not copied."""
        parts = self.parts
        if not parts:
            return
        if len(parts) == 1:
            part = parts[0]
            whole = self.whole
            chunk = whole if whole is not None and len(part) == self.end else bytes(part)
        else:
            chunk = b"".join(parts)
        parts.clear()
        self.events.append(DataReceived(self.sid, chunk, fin))


_NO_EVENTS: Final[list[Event]] = []
"""What the reused batch points at between reads (it never receives events)."""

_SHAPES: Final[dict[int, tuple[int, int | None, bool]]] = {
    # type: (shortest payload, exact payload or None, flags allowed)
    SYN_STREAM: (10, None, True),
    SYN_REPLY: (4, None, True),
    HEADERS: (4, None, True),
    SETTINGS: (4, None, True),
    RST_STREAM: (8, 8, True),
    GOAWAY: (8, 8, False),
    WINDOW_UPDATE: (8, 8, False),
    PING: (4, 4, False),
}


def _check_control_shape(ftype: int, flags: int, length: int) -> None:
    """Reject what spdystream's framer rejects before reading a control payload."""
    shape = _SHAPES.get(ftype)
    if shape is None:
        raise ProtocolError(f"invalid control frame type {ftype}")
    shortest, exact, flags_allowed = shape
    name = "PING" if ftype == PING else "SYN_STREAM" if ftype == SYN_STREAM else None
    if exact is not None and length != exact:
        what = name or f"control frame type {ftype}"
        raise ProtocolError(f"{what} must be {exact} bytes, not {length}")
    if flags and not flags_allowed:
        what = name or f"control frame type {ftype}"
        raise ProtocolError(f"{what} with flags {flags:#x}")
    if length < shortest:
        if name == "SYN_STREAM":
            raise ProtocolError("SYN_STREAM shorter than 10 bytes")
        raise ProtocolError(f"control frame type {ftype} shorter than {shortest} bytes")
