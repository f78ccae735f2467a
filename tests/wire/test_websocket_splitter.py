"""FrameSplitter and masking: the receive fast path reads exactly what wsproto reads.

Every test compares against wsproto parsing the same bytes on its own: the same
messages (binary and text, fragmented or not, with control frames between), and
for malformed input the same close code and reason.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)

from pfcompose.wire import masking, ws_frames
from pfcompose.wire.masking import mask_in_place
from pfcompose.wire.websocket import WebSocketByteStream, WebSocketConnection
from pfcompose.wire.ws_frames import EXPECTED_CONTINUATION, FrameSplitter, Role

MASKERS = ["c", "python"] if masking.C_MASK else ["python"]
C_MASKED = masking.masked


@contextlib.contextmanager
def using(masker: str) -> Iterator[None]:
    """Mask and unmask with websockets' C routine or the pure-Python fallback."""
    chosen = C_MASKED if masker == "c" else masking.python_masked
    saved = masking.masked, ws_frames.masked
    masking.masked = ws_frames.masked = chosen
    try:
        yield
    finally:
        masking.masked, ws_frames.masked = saved
Summary = list[tuple[str, object]]


def summarise(events: list[object]) -> Summary:
    """Whole messages, pings, closes, in order (how pieces were cut does not matter)."""
    out: Summary = []
    parts: list[bytes] = []
    text: list[str] = []
    for event in events:
        if isinstance(event, BytesMessage):
            parts.append(bytes(event.data))
            if event.message_finished:
                out.append(("binary", b"".join(parts)))
                parts = []
        elif isinstance(event, TextMessage):
            text.append(event.data)
            if event.message_finished:
                out.append(("text", "".join(text)))
                text = []
        elif isinstance(event, Ping):
            out.append(("ping", bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            if parts or text:
                out.append(("partial", b"".join(parts) or "".join(text)))
            out.append(("close", (int(event.code), event.reason)))
            return out  # after a close (or a parse error) nothing else counts
    if parts or text:
        out.append(("partial", b"".join(parts) or "".join(text)))
    return out


def reference(stream: bytes, role: Role, cuts: list[int]) -> Summary:
    ws = Connection(ConnectionType.SERVER if role == "server" else ConnectionType.CLIENT)
    events: list[object] = []
    for piece in pieces_of(stream, cuts):
        ws.receive_data(piece)
        events.extend(ws.events())
    return summarise(events)


def split(stream: bytes, role: Role, cuts: list[int]) -> Summary:
    """What WebSocketConnection does with the splitter's output, sans-IO."""
    splitter = FrameSplitter(role)
    ws = Connection(ConnectionType.SERVER if role == "server" else ConnectionType.CLIENT)
    events: list[object] = []
    for piece in pieces_of(stream, cuts):
        for item in splitter.feed(piece):
            if isinstance(item, tuple):
                view, frame_finished, message_finished = item
                events.append(BytesMessage(data=bytes(view), frame_finished=frame_finished,
                                           message_finished=message_finished))
            elif isinstance(item, CloseConnection):
                events.append(item)
            else:
                ws.receive_data(item)
                events.extend(ws.events())
    return summarise(events)


def pieces_of(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points) if b > a]


def encode(role_of_sender: Role, messages: list[tuple[str, object, bool]]) -> bytes:
    """Frames as wsproto's sender writes them: (kind, payload, final) per frame."""
    ws = Connection(ConnectionType.CLIENT if role_of_sender == "client" else
                    ConnectionType.SERVER)
    out = b""
    for kind, payload, final in messages:
        if kind == "ping":
            out += ws.send(Ping(payload=payload))  # type: ignore[arg-type]
        else:
            out += ws.send(Message(data=payload, message_finished=final))  # type: ignore[arg-type]
    return out


SIZES = st.sampled_from([0, 1, 3, 8, 125, 126, 127, 1000, 65535, 65536, 70001])
binary = st.builds(lambda n, seed: random.Random(seed).randbytes(n), SIZES, st.integers(0, 99))
frames = st.lists(
    st.one_of(
        st.tuples(st.just("binary"), binary, st.booleans()),
        st.tuples(st.just("text"), st.text(max_size=40), st.booleans()),
        st.tuples(st.just("ping"), st.binary(max_size=125), st.just(True)),
    ),
    max_size=12,
)


def well_formed(messages: list[tuple[str, object, bool]]) -> list[tuple[str, object, bool]]:
    """A message's fragments share its kind (pings may come between), as senders do."""
    out: list[tuple[str, object, bool]] = []
    open_kind: str | None = None
    for kind, payload, final in messages:
        if kind != "ping" and open_kind is not None and kind != open_kind:
            payload = b"" if open_kind == "binary" else ""
            kind = open_kind
        if kind != "ping":
            open_kind = None if final else kind
        out.append((kind, payload, final))
    if open_kind is not None:
        out.append((open_kind, b"" if open_kind == "binary" else "", True))
    return out


@settings(max_examples=120, deadline=None)
@given(frames, st.lists(st.integers(0, 300_000), max_size=12), st.sampled_from(["server",
                                                                              "client"]))
def test_splitter_reads_what_wsproto_reads(messages: list[tuple[str, object, bool]],
                                          cuts: list[int], role: Role) -> None:
    stream = encode("client" if role == "server" else "server", well_formed(messages))
    want = reference(stream, role, cuts)
    for masker in MASKERS:
        with using(masker):
            assert split(stream, role, cuts) == want


def test_kubectl_like_stream_in_odd_reads() -> None:
    """A message per SPDY frame header and per 32 KiB, read in pieces that cut headers."""
    rng = random.Random(7)
    messages: list[tuple[str, object, bool]] = []
    for _ in range(40):
        messages.append(("binary", rng.randbytes(8), True))
        messages.append(("binary", rng.randbytes(32768), True))
    stream = encode("client", messages)
    cuts = [*range(0, len(stream), 262144), 1, 7, 9, 13, 32777, 32783, 65550]
    want = reference(stream, "server", cuts)
    assert [kind for kind, _ in want] == ["binary"] * 80
    for masker in MASKERS:
        with using(masker):
            assert split(stream, "server", cuts) == want
            assert split(stream, "server", list(range(0, len(stream), 3))) == want


def frame(first: int, payload: bytes, *, masked: bool, length_bytes: int = 0) -> bytes:
    """A raw frame, free to break the rules (non-minimal lengths, RSV bits…)."""
    n = len(payload)
    if length_bytes == 2 or (not length_bytes and 125 < n <= 0xFFFF):
        head = bytes([first, 126 | (0x80 if masked else 0)]) + n.to_bytes(2, "big")
    elif length_bytes == 8 or (not length_bytes and n > 0xFFFF):
        head = bytes([first, 127 | (0x80 if masked else 0)]) + n.to_bytes(8, "big")
    else:
        head = bytes([first, n | (0x80 if masked else 0)])
    if not masked:
        return head + payload
    key = b"\x0f\xf0\x55\xaa"
    body = bytearray(payload)
    mask_in_place(body, 0, key)
    return head + key + bytes(body)


GOOD = frame(0x82, b"fine", masked=True)
MALFORMED = {
    "rsv bit": frame(0xC2, b"x", masked=True),
    "unmasked from client": frame(0x82, b"x", masked=False),
    "binary inside binary": frame(0x02, b"a", masked=True) + frame(0x82, b"b", masked=True),
    "text inside binary": frame(0x02, b"a", masked=True) + frame(0x81, b"b", masked=True),
    "binary inside text": frame(0x01, b"a", masked=True) + frame(0x82, b"b", masked=True),
    "lone continuation": frame(0x80, b"a", masked=True),
    "reserved opcode": frame(0x83, b"a", masked=True),
    "fragmented ping": frame(0x09, b"a", masked=True),
    "long ping": frame(0x89, b"a" * 126, masked=True),
    "non-minimal 16-bit length": frame(0x82, b"a" * 10, masked=True, length_bytes=2),
    "non-minimal 64-bit length": frame(0x82, b"a" * 300, masked=True, length_bytes=8),
    "bad close code": frame(0x88, (999).to_bytes(2, "big"), masked=True),
}


OUR_VERDICTS = {
    "binary inside binary": "a binary frame",
    "text inside binary": "a text frame",
}
"""Malformed input the splitter itself rejects: wsproto's close code, our own words."""


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_closes_as_wsproto_does(name: str) -> None:
    stream = GOOD + MALFORMED[name] + GOOD
    want = reference(stream, "server", [])
    assert want[0] == ("binary", b"fine")
    assert want[-1][0] == "close" and want[-1][1][0] in (1002, 1007)  # type: ignore[index]
    if name in OUR_VERDICTS:  # same code as wsproto, the reason in this project's words
        want[-1] = ("close", (1002, EXPECTED_CONTINUATION + OUR_VERDICTS[name]))
    for cuts in ([], list(range(len(stream)))):
        for masker in MASKERS:
            with using(masker):
                assert split(stream, "server", cuts) == want


def test_close_frame_ends_what_is_read() -> None:
    stream = GOOD + frame(0x88, (1000).to_bytes(2, "big") + b"bye", masked=True) + GOOD
    want = reference(stream, "server", [])
    assert want == [("binary", b"fine"), ("close", (1000, "bye"))]
    assert split(stream, "server", [len(GOOD) + 3]) == want


def random_regions(rng: random.Random, size: int) -> list[tuple[int, int, bytes]]:
    """Payload regions as masked frames leave them: at least 6 header bytes apart."""
    regions: list[tuple[int, int, bytes]] = []
    pos = rng.randrange(0, 3)
    while pos < size:
        n = rng.choice([0, 1, 2, 3, 4, 5, 8, 63, 64, 65, 1000, 4099])
        end = min(size, pos + n)
        regions.append((pos, end, rng.randbytes(4)))
        pos = end + rng.randrange(6, 15)
    return regions


@pytest.mark.parametrize("seed", range(30))
def test_masking_in_place_matches_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(1, 20_000))
    every = random_regions(rng, len(data))
    for regions in (every[:1], every[:2], every):
        want = bytearray(data)
        for start, end, key in regions:
            for i in range(start, end):  # the definition, byte by byte
                want[i] ^= key[(i - start) % 4]
        for masker in MASKERS:
            got = bytearray(data)
            with using(masker):
                for start, end, key in regions:
                    mask_in_place(got, start, key, end)
            for start, end, _ in regions:
                assert got[start:end] == want[start:end]


async def test_byte_stream_joins_the_messages_one_read_brought() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    server = WebSocketByteStream(WebSocketConnection(server_end, "server"))
    messages = [b"h" * 8, b"p" * 32768, b"H" * 8, b"q" * 1000]
    await client_end.send_all(encode("client", [("binary", m, True) for m in messages]))
    with trio.fail_after(5):
        assert await server.receive_some(20000) == b"h" * 8 + b"p" * 19992
        assert await server.receive_some() == b"p" * 12776  # the rest of that read first
        assert await server.receive_some() == b"H" * 8 + b"q" * 1000
