"""WebSocketConnection / WebSocketByteStream: framing, close semantics, big transfers."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest
import trio
import trio.testing
from wirehelp import PAIRS, Pair, mem_pair
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.websocket import (
    WebSocketByteStream,
    WebSocketClosed,
    WebSocketConnection,
)


async def byte_streams(make_pair: Pair) -> tuple[WebSocketByteStream, WebSocketByteStream]:
    c, s = await make_pair()
    return (
        WebSocketByteStream(WebSocketConnection(c, "client")),
        WebSocketByteStream(WebSocketConnection(s, "server")),
    )


async def pump_all(stream: trio.abc.Stream, data: bytes, piece: int) -> None:
    view = memoryview(data)
    for i in range(0, len(view), piece):
        await stream.send_all(view[i : i + piece])


async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some()
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("make_pair", PAIRS)
async def test_large_transfer_both_directions(make_pair: Pair) -> None:
    client, server = await byte_streams(make_pair)
    up = os.urandom(3 * 1024 * 1024 + 17)
    down = os.urandom(2 * 1024 * 1024 + 5)
    got: dict[str, bytes] = {}

    async def read_into(name: str, stream: trio.abc.Stream, n: int) -> None:
        got[name] = await read_exactly(stream, n)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_all, client, up, 700_000)
            nursery.start_soon(pump_all, server, down, 65_536)
            nursery.start_soon(read_into, "up", server, len(up))
            nursery.start_soon(read_into, "down", client, len(down))
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert got["down"] == down
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        assert await server.receive_some() == b""
    await server.aclose()


@pytest.mark.parametrize("make_pair", PAIRS)
async def test_stream_split_across_many_messages(make_pair: Pair) -> None:
    # Go's framer writes a SPDY frame in several small writes, one message each (§4.3)
    client, server = await byte_streams(make_pair)
    frames = [bytes([0x80, 0x03, 0x00, 0x01]) + os.urandom(n) for n in range(0, 300, 7)]
    wire = b"".join(frames)
    cuts = [0, 1, 3, 8, 9, 100, 101, 2000, len(wire)]
    cuts += list(range(2001, len(wire), 13))
    cuts = sorted(set(cuts))

    async def writer() -> None:
        for a, b in itertools.pairwise(cuts):
            await client.send_all(wire[a:b])
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        received = bytearray()
        while chunk := await server.receive_some(50):
            assert len(chunk) <= 50
            received += chunk
    assert bytes(received) == wire
    await server.aclose()


async def raw_peer() -> tuple[WebSocketConnection, trio.abc.Stream, Connection]:
    """A server-role WebSocketConnection facing a raw wsproto client we drive by hand."""
    c, s = trio.testing.memory_stream_pair()
    return WebSocketConnection(s, "server"), c, Connection(ConnectionType.CLIENT)


async def read_events(stream: trio.abc.Stream, ws: Connection) -> list[object]:
    ws.receive_data(await stream.receive_some())
    return list(ws.events())


async def test_ping_is_answered_while_receiving() -> None:
    server, raw, peer = await raw_peer()
    await raw.send_all(peer.send(Ping(payload=b"p1")) + peer.send(BytesMessage(data=b"x")))
    assert await server.receive_message() == b"x"
    assert await read_events(raw, peer) == [Pong(payload=b"p1")]


async def test_text_message_in_tunnel_is_an_error() -> None:
    server, raw, peer = await raw_peer()
    stream = WebSocketByteStream(server)
    await raw.send_all(peer.send(TextMessage(data="hi")))
    with pytest.raises(ProtocolError, match=r"^invalid message type received$"):
        await stream.receive_some()


async def test_close_codes() -> None:
    server, raw, peer = await raw_peer()
    stream = WebSocketByteStream(server)
    await raw.send_all(peer.send(BytesMessage(data=b"last")) + peer.send(
        CloseConnection(code=1001, reason="going away")))
    assert await stream.receive_some() == b"last"
    with pytest.raises(WebSocketClosed, match=r"^websocket closed with code 1001: going away$"):
        await stream.receive_some()
    # our close answer went out
    assert await read_events(raw, peer) == [CloseConnection(code=1001, reason="going away")]


async def test_close_1000_is_eof_and_answered() -> None:
    server, raw, peer = await raw_peer()
    stream = WebSocketByteStream(server)
    await raw.send_all(peer.send(CloseConnection(code=1000)))
    assert await stream.receive_some() == b""
    assert await stream.receive_some() == b""
    assert await read_events(raw, peer) == [CloseConnection(code=1000, reason="")]
    with pytest.raises(WebSocketClosed):
        await stream.send_all(b"late")


async def test_transport_eof_without_close_is_abnormal() -> None:
    server, raw, _ = await raw_peer()
    stream = WebSocketByteStream(server)
    await raw.aclose()
    with pytest.raises(WebSocketClosed) as info:
        await stream.receive_some()
    assert info.value.code == 1006


async def test_fragmented_message_reassembled_and_bounded() -> None:
    c, s = trio.testing.memory_stream_pair()
    server = WebSocketConnection(s, "server", max_message_size=10)
    peer = Connection(ConnectionType.CLIENT)
    await c.send_all(
        peer.send(BytesMessage(data=b"ab", message_finished=False))
        + peer.send(BytesMessage(data=b"cd", message_finished=True))
        + peer.send(TextMessage(data="x" * 6, message_finished=False))
        + peer.send(TextMessage(data="y" * 6, message_finished=True))
    )
    assert await server.receive_message() == b"abcd"
    with pytest.raises(ProtocolError):
        await server.receive_message()


async def test_client_frames_are_masked_server_frames_not() -> None:
    c, s = trio.testing.memory_stream_pair()
    client = WebSocketConnection(c, "client")
    server = WebSocketConnection(s, "server")
    await client.send_message(b"abc")
    raw = await s.receive_some()
    assert raw[0] == 0x82 and raw[1] == 0x80 | 3
    await server.send_message("t")
    assert await c.receive_some() == b"\x81\x01t"


async def test_initial_data_is_delivered_first() -> None:
    c, s = trio.testing.memory_stream_pair()
    glued = b"\x82\x03abc"
    client = WebSocketConnection(c, "client", initial_data=glued)
    await s.send_all(b"\x82\x03def")
    assert await client.receive_message() == b"abc"
    assert await client.receive_message() == b"def"


async def test_aclose_waits_for_close_reply() -> None:
    client, server = await byte_streams(mem_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        assert await server.receive_some() == b""
    assert client.ws.closed and client.ws.close_code == 1000
    await server.aclose()
