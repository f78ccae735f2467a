"""Sans-IO WebSocket framing (RFC 6455 §5) for the data path: no trio, no sockets.

:func:`binary_frame_parts` frames whole binary messages as buffers for one
gathered write, masked in C (:mod:`.masking`): wsproto's client framing copied
the payload five times and capped tunnel uploads near 220 MB/s.
:class:`FrameSplitter` parses received bytes: binary frames are decoded and
unmasked here (at most one copy per frame piece), everything else — text,
control, close, anything malformed — is handed on byte for byte to wsproto's
frame-level connection, so its checks, errors and closing handshake stay as they
are. The trio driver is :mod:`.websocket` (docs/wire-protocol.md §4.3).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Literal

from wsproto.events import CloseConnection

from .masking import masked

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
    per frame, RFC 6455 §5.3, as wsproto does). Written with one gathered write
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


_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE = 0x0, 0x1, 0x2, 0x8

EXPECTED_CONTINUATION = "expected a continuation frame, got "
"""Start of the close reason when a new data frame arrives inside a binary message."""
_RSV_BITS = 0x70

Piece = tuple[memoryview, bool, bool]
"""Binary payload decoded by :class:`FrameSplitter`: (data, frame_finished, message_finished)."""


def whole_bytes(piece: Buffer) -> bytes:
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
    :class:`CloseConnection` with 1002 (:data:`EXPECTED_CONTINUATION`), the code
    wsproto closes with for its parse errors.

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

    def _whole_frames(
        self, data: bytes, pos: int, view: memoryview, out: list[Piece | bytes | CloseConnection]
    ) -> int:
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
                out.append(
                    (memoryview(masked(view[start:stop], data[start - 4 : start])), True, True)
                )
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
                return CloseConnection(1002, EXPECTED_CONTINUATION + "a binary frame")
            if opcode == _OP_BINARY and self._text_open:
                return None  # wsproto: expected CONTINUATION
            self._binary_open = not fin
            return True
        if opcode == _OP_TEXT and self._binary_open:
            return CloseConnection(1002, EXPECTED_CONTINUATION + "a text frame")
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
