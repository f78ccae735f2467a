"""Sans-IO SPDY/3: bytes in → events out, calls → bytes out (wire-protocol.md §6)."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.spdy import (
    DataReceived,
    GoAwayReceived,
    HeaderCompressor,
    HeadersReceived,
    LocalProtocolError,
    PingAcked,
    RstStatus,
    SettingsReceived,
    SpdyConnection,
    StreamOpened,
    StreamReplied,
    StreamResetReceived,
    StreamState,
    WindowUpdateReceived,
    encode_header_block,
    parse_header_block,
)
from pfcompose.wire.spdy_dict import SPDY3_DICT

ERROR_HEADERS = {"streamType": "error", "port": "80", "requestID": "0"}


class RawPeer:
    """Builds frames by hand (any header block, any flags) with its own zlib context."""

    def __init__(self) -> None:
        self.z = zlib.compressobj(
            9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICT
        )

    def compress(self, block: bytes) -> bytes:
        return self.z.compress(block) + self.z.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload

    def syn_stream(self, sid: int, block: bytes, flags: int = 0, prio: int = 0) -> bytes:
        payload = struct.pack(">IIBB", sid, 0, prio << 5, 0) + self.compress(block)
        return self.control(1, flags, payload)

    def syn_reply(self, sid: int, block: bytes = b"\0\0\0\0", flags: int = 0) -> bytes:
        return self.control(2, flags, struct.pack(">I", sid) + self.compress(block))

    def headers(self, sid: int, block: bytes, flags: int = 0) -> bytes:
        return self.control(8, flags, struct.pack(">I", sid) + self.compress(block))


def raw_block(*pairs: tuple[bytes, bytes]) -> bytes:
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


def data(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", sid, (flags << 24) | len(payload)) + payload


def pair() -> tuple[SpdyConnection, SpdyConnection]:
    return SpdyConnection("client"), SpdyConnection("server")


def handshake(client: SpdyConnection, server: SpdyConnection, n: int = 1) -> list[int]:
    """Open ``n`` client streams and reply to each; return their ids."""
    ids = [client.open_stream(ERROR_HEADERS) for _ in range(n)]
    server.receive_data(client.data_to_send())
    for sid in ids:
        server.reply(sid)
    client.receive_data(server.data_to_send())
    return ids


# --------------------------------------------------------------------------- dictionary


def test_dictionary_checksums() -> None:
    assert len(SPDY3_DICT) == 1423
    assert zlib.adler32(SPDY3_DICT) == 0xE3C6A7C2
    assert (
        hashlib.sha256(SPDY3_DICT).hexdigest()
        == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


# --------------------------------------------------------------------------- §6.6 worked bytes


def test_worked_bytes_ping() -> None:
    client = SpdyConnection("client")
    assert client.ping() == 1
    assert client.data_to_send() == bytes.fromhex("80030006 00000004 00000001")


def test_worked_bytes_data_rst_goaway() -> None:
    client, server = pair()
    handshake(client, server, 3)  # streams 1, 3, 5
    client.send_data(3, b"hello")
    assert client.data_to_send() == bytes.fromhex("00000003 00000005 68656c6c6f")
    client.send_data(3, b"", fin=True)
    assert client.data_to_send() == bytes.fromhex("00000003 01000000")
    assert client.reset(5) is True
    assert client.data_to_send() == bytes.fromhex("80030003 00000008 00000005 00000005")
    server.goaway()
    assert server.data_to_send() == bytes.fromhex("80030007 00000008 00000005 00000000")
    server2_client = SpdyConnection("client")
    server2 = SpdyConnection("server")
    server2_client.open_stream(ERROR_HEADERS)
    server2.receive_data(server2_client.data_to_send())
    server2.goaway()
    assert server2.data_to_send() == bytes.fromhex("80030007 00000008 00000001 00000000")


def test_worked_bytes_go_syn_replies_decode() -> None:
    """Go's compressed SYN_REPLYs (first block with zlib header, then a continuation)."""
    client = SpdyConnection("client")
    client.open_stream(ERROR_HEADERS)
    client.open_stream(ERROR_HEADERS)
    first = bytes.fromhex("80030002 00000014 00000001 78f9e3c6a7c2 6260606000000000ffff")
    second = bytes.fromhex("80030002 0000000c 00000003 02610000 0000ffff")
    assert client.receive_data(first + second) == [StreamReplied(1, {}), StreamReplied(3, {})]


def test_our_syn_reply_blocks() -> None:
    client, server = pair()
    client.open_stream(ERROR_HEADERS)
    client.open_stream(ERROR_HEADERS)
    server.receive_data(client.data_to_send())
    server.reply(1)
    first = server.data_to_send()
    server.reply(3)
    second = server.data_to_send()
    assert first[:8] == bytes.fromhex("80030002") + struct.pack(">I", len(first) - 8)
    assert first[8:12] == bytes.fromhex("00000001")
    assert first[12:18] == bytes.fromhex("78f9e3c6a7c2")  # level 9 + FDICT + DICTID, once
    assert first.endswith(b"\x00\x00\xff\xff") and second.endswith(b"\x00\x00\xff\xff")
    assert second[8:12] == bytes.fromhex("00000003") and second[12:14] != b"\x78\xf9"
    inflater = zlib.decompressobj(zdict=SPDY3_DICT)
    assert inflater.decompress(first[12:]) == b"\0\0\0\0"
    assert inflater.decompress(second[12:]) == b"\0\0\0\0"


def test_error_stream_header_block_uncompressed() -> None:
    expected = (
        bytes.fromhex("00000003")
        + bytes.fromhex("0000000a") + b"streamtype" + bytes.fromhex("00000005") + b"error"
        + bytes.fromhex("00000004") + b"port" + bytes.fromhex("00000002") + b"80"
        + bytes.fromhex("00000009") + b"requestid" + bytes.fromhex("00000001") + b"0"
    )  # fmt: skip
    assert encode_header_block(ERROR_HEADERS) == expected
    assert parse_header_block(expected) == {"streamtype": "error", "port": "80", "requestid": "0"}


def test_syn_stream_frame_layout() -> None:
    client = SpdyConnection("client")
    assert client.open_stream(ERROR_HEADERS) == 1
    frame = client.data_to_send()
    assert frame[:4] == bytes.fromhex("80030001") and frame[4] == 0
    assert struct.unpack(">I", b"\0" + frame[5:8])[0] == len(frame) - 8
    assert frame[8:18] == bytes.fromhex("00000001 00000000 0000")
    assert zlib.decompressobj(zdict=SPDY3_DICT).decompress(frame[18:]) == encode_header_block(
        ERROR_HEADERS
    )


# --------------------------------------------------------------------------- every frame type


def test_syn_stream_events_and_flags() -> None:
    peer, server = RawPeer(), SpdyConnection("server")
    events = server.receive_data(
        peer.syn_stream(1, raw_block((b"port", b"80")), prio=3)
        + peer.syn_stream(3, raw_block((b"a", b"x\x00y"), (b"a", b"z")), flags=0x01)
        + peer.syn_stream(5, raw_block(), flags=0x02)
    )
    assert events == [
        StreamOpened(1, {"port": "80"}, False, False, 3, 0),
        StreamOpened(3, {"a": "x"}, True, False, 0, 0),
        StreamOpened(5, {}, False, True, 0, 0),
    ]
    assert server.stream_state(1) is StreamState.OPEN
    assert server.stream_state(3) is StreamState.HALF_CLOSED_REMOTE
    assert server.stream_state(5) is StreamState.HALF_CLOSED_LOCAL
    with pytest.raises(LocalProtocolError):
        server.send_data(5, b"x")  # unidirectional: we may not send


def test_client_and_server_roundtrip_all_frame_kinds() -> None:
    client, server = pair()
    (sid,) = handshake(client, server)
    client.send_data(sid, b"ping?")
    assert server.receive_data(client.data_to_send()) == [DataReceived(sid, b"ping?")]
    server.send_data(sid, b"pong!", fin=True)
    assert client.receive_data(server.data_to_send()) == [DataReceived(sid, b"pong!", True)]
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    client.send_data(sid, fin=True)
    assert server.receive_data(client.data_to_send()) == [DataReceived(sid, b"", True)]
    assert server.stream_state(sid) is StreamState.CLOSED
    assert client.stream_state(sid) is StreamState.CLOSED
    # pings both ways: echoed by the other parity, acked by the sender
    pid = server.ping()
    assert pid == 2
    assert client.receive_data(server.data_to_send()) == []
    assert server.receive_data(client.data_to_send()) == [PingAcked(2)]


def test_syn_reply_with_fin_and_headers_frame() -> None:
    client, peer = SpdyConnection("client"), RawPeer()
    client.open_stream(ERROR_HEADERS)
    events = client.receive_data(
        peer.syn_reply(1, raw_block((b"x-a", b"1")))
        + peer.headers(1, raw_block((b"x-b", b"2")), flags=0x01)
        + peer.syn_reply(1)  # duplicate: ignored
        + peer.syn_reply(9)  # unknown: ignored
    )
    assert events == [StreamReplied(1, {"x-a": "1"}), HeadersReceived(1, {"x-b": "2"}, True)]
    assert client.stream_state(1) is StreamState.HALF_CLOSED_REMOTE


def test_rst_settings_window_update_goaway_decode() -> None:
    client, server = pair()
    handshake(client, server)
    frames = (
        RawPeer.control(4, 0x01, struct.pack(">IIIII", 2, 0x01000004, 100, 0x00000007, 65536))
        + RawPeer.control(9, 0, struct.pack(">II", 1, 0x80001000))
        + RawPeer.control(3, 0, struct.pack(">II", 1, 5))
        + RawPeer.control(3, 0, struct.pack(">II", 77, 5))  # unknown stream: ignored
        + RawPeer.control(7, 0, struct.pack(">II", 1, 2))
        + data(1, b"after goaway: never read")
    )
    assert client.receive_data(frames) == [
        SettingsReceived(1, ((1, 4, 100), (0, 7, 65536))),
        WindowUpdateReceived(1, 0x1000),
        StreamResetReceived(1, 5),
        GoAwayReceived(1, 2),
    ]
    assert client.stream_state(1) is StreamState.RESET
    assert client.receive_data(RawPeer.control(10, 0, b"")) == []  # input closed after GOAWAY


def test_ping_parity_echo_and_wrap() -> None:
    client = SpdyConnection("client")
    assert client.receive_data(RawPeer.control(6, 0, struct.pack(">I", 4))) == []
    assert client.data_to_send() == RawPeer.control(6, 0, struct.pack(">I", 4))
    assert client.receive_data(RawPeer.control(6, 0, struct.pack(">I", 7))) == []  # ours, unknown
    assert client.data_to_send() == b""
    server = SpdyConnection("server")
    server.receive_data(RawPeer.control(6, 0, struct.pack(">I", 7)))
    assert server.data_to_send() == RawPeer.control(6, 0, struct.pack(">I", 7))
    client._next_ping_id = 0x7FFFFFFF
    assert (client.ping(), client.ping()) == (0x7FFFFFFF, 1)


def test_header_blocks_share_one_zlib_context_across_frames() -> None:
    client, server = pair()
    wire = b""
    expected = []
    frame_ends = []
    for i in range(60):
        headers = {"streamtype": "data", "port": str(1000 + i), "requestid": str(i)}
        sid = client.open_stream(headers)
        expected.append(StreamOpened(sid, headers))
        wire += client.data_to_send()
        frame_ends.append(len(wire))
    events = []
    for i in range(len(wire)):  # one byte at a time
        events += server.receive_data(wire[i : i + 1])
    assert events == expected
    # the blocks after the first carry no zlib header and cannot be read alone
    second = wire[frame_ends[0] :]
    assert second[18:20] != b"\x78\xf9"
    with pytest.raises(ProtocolError):
        SpdyConnection("server").receive_data(second)


# --------------------------------------------------------------------------- stream ids


def test_receive_side_stream_id_checks() -> None:
    peer, server = RawPeer(), SpdyConnection("server")
    block = raw_block((b"port", b"80"))
    rst = lambda sid: RawPeer.control(3, 0, struct.pack(">II", sid, 1))  # noqa: E731
    assert [e.stream_id for e in server.receive_data(peer.syn_stream(7, block))] == [7]  # gap ok
    assert server.receive_data(peer.syn_stream(7, block)) == []
    assert server.data_to_send() == rst(7)
    assert server.receive_data(peer.syn_stream(5, block)) == []
    assert server.data_to_send() == rst(5)
    assert server.receive_data(peer.syn_stream(0x80000001, block)) == []
    assert server.data_to_send() == rst(0x80000001)
    assert [e.stream_id for e in server.receive_data(peer.syn_stream(10, block))] == [10]
    server.goaway()
    server.data_to_send()
    assert server.receive_data(peer.syn_stream(13, block)) == []  # dropped silently
    assert server.data_to_send() == b""
    with pytest.raises(ProtocolError, match="stream id 0"):
        server.receive_data(peer.syn_stream(0, block))


def test_client_first_expected_remote_id_is_two() -> None:
    peer, client = RawPeer(), SpdyConnection("client")
    assert client.receive_data(peer.syn_stream(1, raw_block())) == []
    assert client.data_to_send() == RawPeer.control(3, 0, struct.pack(">II", 1, 1))
    assert [e.stream_id for e in client.receive_data(peer.syn_stream(2, raw_block()))] == [2]


def test_local_stream_ids_by_role_and_exhaustion() -> None:
    client, server = pair()
    assert [client.open_stream({}) for _ in range(3)] == [1, 3, 5]
    assert [server.open_stream({}) for _ in range(2)] == [2, 4]
    client._next_stream_id = 0x7FFFFFFF
    assert client.open_stream({}) == 0x7FFFFFFF
    with pytest.raises(LocalProtocolError, match="unable to get new stream id"):
        client.open_stream({})


# --------------------------------------------------------------------------- DATA rules


def test_data_dropping_rules() -> None:
    client, peer = SpdyConnection("client"), RawPeer()
    client.open_stream(ERROR_HEADERS)
    assert client.receive_data(data(1, b"before reply")) == []  # dropped (§13.10)
    assert client.receive_data(data(9, b"unknown stream")) == []
    assert client.receive_data(peer.syn_reply(1) + data(1, b"")) == [StreamReplied(1, {})]
    assert client.receive_data(data(1, b"ok", 0x01) + data(1, b"after fin")) == [
        DataReceived(1, b"ok", True)
    ]
    with pytest.raises(ProtocolError, match="stream id 0"):
        client.receive_data(data(0, b""))


def test_data_frame_streams_out_in_pieces() -> None:
    client, server = pair()
    (sid,) = handshake(client, server)
    client.send_data(sid, b"abcdefghij", fin=True)
    wire = client.data_to_send()
    events = server.receive_data(wire[:11]) + server.receive_data(wire[11:14])
    events += server.receive_data(wire[14:])
    assert events == [
        DataReceived(sid, b"abc"),
        DataReceived(sid, b"def"),
        DataReceived(sid, b"ghij", True),
    ]
    assert server.buffered_input == 0


def test_large_payload_split_into_bounded_frames() -> None:
    client = SpdyConnection("client", max_data_frame=1000)
    server = SpdyConnection("server")
    (sid,) = handshake(client, server)
    client.send_data(sid, bytes(range(256)) * 10, fin=True)
    wire = client.data_to_send()
    assert len(wire) == 2560 + 3 * 8
    lengths = [struct.unpack(">I", b"\0" + wire[p + 5 : p + 8])[0] for p in (0, 1008, 2016)]
    assert lengths == [1000, 1000, 560]
    assert [wire[p + 4] for p in (0, 1008, 2016)] == [0, 0, 1]
    got = server.receive_data(wire)
    assert b"".join(e.data for e in got if isinstance(e, DataReceived)) == bytes(range(256)) * 10


def test_reset_after_fin_sends_nothing_and_states() -> None:
    client, server = pair()
    a, b = handshake(client, server, 2)
    client.send_data(a, fin=True)
    client.data_to_send()
    assert client.reset(a) is False and client.data_to_send() == b""
    assert client.stream_state(a) is StreamState.RESET
    assert client.reset(b, RstStatus.INTERNAL_ERROR) is True
    assert client.data_to_send() == RawPeer.control(3, 0, struct.pack(">II", b, 6))
    assert server.receive_data(RawPeer.control(3, 0, struct.pack(">II", b, 6))) == [
        StreamResetReceived(b, 6)
    ]
    assert client.stream_state(99) is None


# --------------------------------------------------------------------------- fatal input


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (RawPeer.control(5, 0, b""), "invalid control frame type 5"),
        (RawPeer.control(10, 0, b"\0" * 8), "invalid control frame type 10"),
        (RawPeer.control(6, 1, struct.pack(">I", 2)), "PING with flags"),
        (RawPeer.control(6, 0, struct.pack(">I", 0)), "PING with id 0"),
        (RawPeer.control(6, 0, struct.pack(">II", 2, 0)), "PING must be 4 bytes"),
        (RawPeer.control(7, 0, struct.pack(">I", 0)), "must be 8 bytes"),
        (RawPeer.control(7, 1, struct.pack(">II", 0, 0)), "with flags"),
        (RawPeer.control(9, 1, struct.pack(">II", 1, 1)), "with flags"),
        (RawPeer.control(3, 0, struct.pack(">II", 1, 0)), "status 0"),
        (RawPeer.control(3, 0, struct.pack(">II", 0, 5)), "stream id 0"),
        (RawPeer.control(4, 0, struct.pack(">II", 2, 0)), "SETTINGS length"),
        (RawPeer.control(1, 0, b"\0" * 9), "shorter than 10"),
        (RawPeer.control(2, 0, b"\0" * 3), "shorter than 4"),
        (RawPeer.control(2, 0, struct.pack(">I", 1) + b"garbage!"), "does not inflate"),
    ],
)
def test_fatal_frames(frame: bytes, message: str) -> None:
    conn = SpdyConnection("client")
    conn.open_stream({})
    with pytest.raises(ProtocolError, match=message):
        conn.receive_data(frame)
    with pytest.raises(ProtocolError):  # the connection stays dead
        conn.receive_data(b"")


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (lambda p: p.syn_stream(1, raw_block((b"Port", b"80"))), "not lowercase"),
        (lambda p: p.syn_stream(1, raw_block((b"host", b"x"))), "'host' is not allowed"),
        (lambda p: p.syn_stream(1, raw_block((b"transfer-encoding", b"x"))), "not allowed"),
        (lambda p: p.syn_stream(1, raw_block() + b"\0"), "trailing bytes"),
        (lambda p: p.syn_stream(1, b"\0\0\0\x05"), "claims 5 pairs"),
        (lambda p: p.syn_stream(1, b"\0\0\0\x01\0\0\0\x09abc\0\0\0\0"), "truncated"),
    ],
)
def test_fatal_header_blocks(builder, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=message):
        SpdyConnection("server").receive_data(builder(RawPeer()))


def test_host_allowed_in_syn_reply_but_connection_is_not() -> None:
    peer, client = RawPeer(), SpdyConnection("client")
    client.open_stream({})
    client.open_stream({})
    assert client.receive_data(peer.syn_reply(1, raw_block((b"host", b"h")))) == [
        StreamReplied(1, {"host": "h"})
    ]
    with pytest.raises(ProtocolError, match="'connection' is not allowed"):
        client.receive_data(peer.syn_reply(3, raw_block((b"connection", b"close"))))


def test_frame_length_bound() -> None:
    conn = SpdyConnection("server", max_frame_payload=1024)
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024"):
        conn.receive_data(RawPeer.control(1, 0, b"")[:5] + b"\x00\x04\x01")
    conn = SpdyConnection("server", max_frame_payload=1024)
    with pytest.raises(ProtocolError, match="exceeds"):
        conn.receive_data(data(1, b"")[:5] + b"\x00\x04\x01")


def test_inflated_header_block_bound() -> None:
    peer = RawPeer()
    bomb = peer.syn_stream(1, raw_block((b"x", b"a" * 200_000)))
    assert len(bomb) < 2000
    with pytest.raises(ProtocolError, match="larger than 65536"):
        SpdyConnection("server", max_header_block=65536).receive_data(bomb)


def test_local_misuse_is_a_local_error() -> None:
    client, server = pair()
    with pytest.raises(LocalProtocolError):
        client.send_data(1, b"x")
    sid = client.open_stream({})
    server.receive_data(client.data_to_send())
    with pytest.raises(LocalProtocolError, match="not been replied"):
        server.send_data(sid, b"x")
    with pytest.raises(LocalProtocolError):
        client.reply(sid)
    server.goaway()
    with pytest.raises(LocalProtocolError, match="going away"):
        server.open_stream({})


def test_consecutive_data_frames_of_a_stream_merge_into_one_event() -> None:
    client = SpdyConnection("client", max_data_frame=4)
    server = SpdyConnection("server")
    a, b = handshake(client, server, 2)
    client.send_data(a, b"0123456789")  # three frames
    client.send_data(b, b"xy")
    client.send_data(a, b"ab", fin=True)
    wire = client.data_to_send()
    assert server.receive_data(wire) == [
        DataReceived(a, b"0123456789"),
        DataReceived(b, b"xy"),
        DataReceived(a, b"ab", True),
    ]


def test_data_to_send_parts_passes_large_payloads_uncopied() -> None:
    client, server = pair()
    (sid,) = handshake(client, server)
    big = bytes(100_000)
    client.send_data(sid, b"small")
    client.send_data(sid, big)
    client.ping()
    parts = client.data_to_send_parts(copy_below=65536)
    assert [len(p) for p in parts] == [8 + 5 + 8, 100_000, 12]
    assert isinstance(parts[1], memoryview) and parts[1].obj is big
    assert client.data_to_send() == b""
    events = server.receive_data(b"".join(parts))
    assert events == [DataReceived(sid, b"small" + big)]


def test_headers_frame_round_trip_both_ways() -> None:
    client, server = pair()
    (sid,) = handshake(client, server)
    client.send_headers(sid, {"X-Trace": "abc"})
    assert server.receive_data(client.data_to_send()) == [HeadersReceived(sid, {"x-trace": "abc"})]
    server.send_headers(sid, {"x-done": "1"}, fin=True)
    assert client.receive_data(server.data_to_send()) == [
        HeadersReceived(sid, {"x-done": "1"}, True)
    ]
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL


def test_header_blocks_are_the_bytes_go_writes_at_level_9() -> None:
    """HEADER_LEVEL is faster than Go's level 9 but must write the same bytes."""
    go = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=SPDY3_DICT)
    ours = HeaderCompressor()
    header_sets: list[dict[str, str]] = [{}]
    for request in range(0, 3000, 7):
        for kind in ("error", "data"):
            for port in ("80", "5432", "8080", "65535"):
                header_sets.append({"streamtype": kind, "port": port, "requestid": str(request)})
    header_sets += [{"X-Stream-Protocol-Version": "portforward.k8s.io"}, {"port": "http"}]
    for headers in header_sets:
        block = encode_header_block(headers)
        assert ours.compress(headers) == go.compress(block) + go.flush(zlib.Z_SYNC_FLUSH)
