"""Hostile input: arbitrary bytes split anywhere raise only ProtocolError, in bounded memory."""

from __future__ import annotations

import contextlib
import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.spdy import DataReceived, Event, SpdyConnection

MAX_PAYLOAD = 4096
MAX_BLOCK = 8192


def feed(conn: SpdyConnection, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed ``data`` split at ``cuts``; check the decoder's memory after every piece."""
    events: list[Event] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        events += conn.receive_data(data[start:end])
        assert conn.buffered_input <= MAX_PAYLOAD + 8
    return events


def frame_headers(draw: st.DrawFn) -> bytes:
    """A plausible frame: mostly valid-looking headers with random payloads."""
    control = draw(st.booleans())
    length = draw(st.integers(0, 64) | st.integers(0, 0xFFFFFF))
    flags = draw(st.integers(0, 255))
    body = draw(st.binary(max_size=80))
    if control:
        ftype = draw(st.integers(0, 12) | st.integers(0, 0xFFFF))
        head = struct.pack(">HHI", 0x8003, ftype, (flags << 24) | length)
    else:
        head = struct.pack(">II", draw(st.integers(0, 0x7FFFFFFF)), (flags << 24) | length)
    return head + body


@st.composite
def frame_sequences(draw: st.DrawFn) -> bytes:
    return b"".join(frame_headers(draw) for _ in range(draw(st.integers(0, 6))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from(["client", "server"]),
    data=st.binary(max_size=600) | frame_sequences(),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_arbitrary_bytes_only_raise_protocol_error(role: str, data: bytes, cuts: list[int]) -> None:
    conn = SpdyConnection(
        "client" if role == "client" else "server",
        max_frame_payload=MAX_PAYLOAD,
        max_header_block=MAX_BLOCK,
    )
    conn.open_stream({"port": "80"})
    conn.open_stream({"port": "81"})
    with contextlib.suppress(ProtocolError):
        feed(conn, data, cuts)


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 100_000), max_size=30),
)
def test_valid_traffic_gives_the_same_bytes_whatever_the_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    client = SpdyConnection("client", max_data_frame=1000)
    server = SpdyConnection("server", max_frame_payload=MAX_PAYLOAD)
    sids = [client.open_stream({"requestid": str(i)}) for i in range(len(payloads))]
    server.receive_data(client.data_to_send())
    for sid in sids:
        server.reply(sid)
    client.receive_data(server.data_to_send())
    for sid, payload in zip(sids, payloads, strict=True):
        client.send_data(sid, payload, fin=True)
        client.ping()
    events = feed(server, client.data_to_send(), cuts)
    got: dict[int, bytes] = dict.fromkeys(sids, b"")
    fins = set()
    for event in events:
        assert isinstance(event, DataReceived)
        got[event.stream_id] += event.data
        if event.fin:
            fins.add(event.stream_id)
    assert [got[sid] for sid in sids] == payloads
    assert fins == set(sids)
    assert len(server.data_to_send()) == 12 * len(payloads)  # every ping echoed


def test_huge_declared_frame_is_rejected_before_buffering() -> None:
    conn = SpdyConnection("server", max_frame_payload=MAX_PAYLOAD)
    try:
        conn.receive_data(struct.pack(">HHI", 0x8003, 1, 0xFFFFFF) + b"\0" * 100)
    except ProtocolError as exc:
        assert "exceeds the limit" in str(exc)
    else:
        raise AssertionError("no ProtocolError")
    assert conn.buffered_input == 0


def test_default_bound_buffers_a_partial_control_frame_only() -> None:
    conn = SpdyConnection("server")
    conn.receive_data(struct.pack(">HHI", 0x8003, 4, 0xFFFFFF))  # a SETTINGS, 16 MiB-1 long
    conn.receive_data(b"\0" * 100_000)
    assert conn.buffered_input == 100_000
