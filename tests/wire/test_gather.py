"""Gathered writes: a SPDY header and its payload leave as one write, bytes in order."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from pfcompose.wire import sockio
from pfcompose.wire.gather import send_parts
from pfcompose.wire.prefixed import PrefixedStream


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await stream.receive_some(n - len(out))
        assert chunk, "stream ended early"
        out += chunk
    return bytes(out)


async def test_parts_larger_than_the_socket_buffer_arrive_whole_and_in_order() -> None:
    left, right = await _socket_pair()
    parts = [b"\x00\x00\x00\x01hdr!", memoryview(os.urandom(3 << 20)), b"", b"tail",
             bytearray(os.urandom(70_000))]  # fmt: skip
    expected = b"".join(bytes(p) for p in parts)
    async with left, right, trio.open_nursery() as nursery:
        nursery.start_soon(send_parts, PrefixedStream(left, b"ignored on send"), parts)
        with trio.fail_after(10):
            assert await _receive_exactly(right, len(expected)) == expected


async def test_a_header_and_payload_are_one_system_call_on_tcp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    left, right = await _socket_pair()
    calls = 0
    sendv = sockio.sendv_now  # writev(2), or one joined send on the portable path

    def counting(sock: object, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        return sendv(sock, buffers)

    monkeypatch.setattr(sockio, "sendv_now", counting)
    async with left, right:
        await send_parts(left, [b"12345678", b"x" * 4096])
        assert calls == 1
        assert await _receive_exactly(right, 4104) == b"12345678" + b"x" * 4096


async def test_a_cancelled_write_is_finished_not_cut_short() -> None:
    left, right = await _socket_pair()
    payload = os.urandom(4 << 20)  # more than the socket buffers hold
    async with left, right, trio.open_nursery() as nursery:
        sent = trio.Event()

        async def write_then_be_cancelled() -> None:
            with trio.CancelScope() as scope:
                scope.cancel()  # already cancelled: the write must still complete
                await send_parts(left, [b"HEADER!!", payload])
                sent.set()
            sent.set()

        nursery.start_soon(write_then_be_cancelled)
        with trio.fail_after(10):
            assert await _receive_exactly(right, 8 + len(payload)) == b"HEADER!!" + payload
            await sent.wait()


async def test_other_streams_get_the_parts_joined() -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send_parts(send, [b"ab", memoryview(b"cd"), bytearray(b"ef")])
    assert await receive.receive_some() == b"abcdef"


async def test_a_broken_socket_is_a_broken_resource() -> None:
    left, right = await _socket_pair()
    await right.aclose()
    async with left:
        try:
            for _ in range(100):  # the first writes may still be buffered
                await send_parts(left, [b"h" * 8, b"p" * 65536])
        except trio.BrokenResourceError:
            return
    raise AssertionError("no BrokenResourceError")


async def test_through_the_tunnel_a_header_and_its_payload_are_one_message() -> None:
    from pfcompose.wire.websocket import SEND_CHUNK, WebSocketByteStream, WebSocketConnection

    c, s = trio.testing.memory_stream_pair()
    client = WebSocketByteStream(WebSocketConnection(c, "client"))
    server = WebSocketConnection(s, "server")
    payload = os.urandom(100_000)
    big = os.urandom(300_000)  # over SEND_CHUNK: split across messages
    sent = b"HEADER!!" + payload + b"H2" + big + b"end"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_parts, client, [b"HEADER!!", payload, b"H2", big, b"end"])
        with trio.fail_after(10):
            messages = [await server.receive_message() for _ in range(2)]
    # messages are filled up to SEND_CHUNK: a header always travels with its payload
    assert messages == [sent[:SEND_CHUNK], sent[SEND_CHUNK:]]


async def test_direct_reads_replay_a_prefix_first_and_see_eof() -> None:
    left, right = await _socket_pair()
    stream = PrefixedStream(right, b"read ahead|")
    async with left, right:
        await left.send_all(b"from the socket")
        assert sockio.socket_of(stream) is None  # bytes to replay: not read directly yet
        assert await sockio.receive_some(stream, 100) == b"read ahead|"
        assert sockio.socket_of(stream) is right
        assert await sockio.receive_some(stream, 100) == b"from the socket"
        await left.send_eof()
        assert await sockio.receive_some(stream, 100) == b""
