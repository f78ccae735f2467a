"""The v4 channel protocol: codec both framings, client ↔ server, the Python client."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from wirehelp import read_request

from pfcompose.wire.channel import ChannelClient, ChannelServer
from pfcompose.wire.channel_codec import (
    ChannelCodec,
    PortConfirmed,
    PortData,
    PortError,
    port_preamble,
)
from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.upgrade_server import accept_channel_websocket
from pfcompose.wire.websocket import WebSocketConnection

# ---- codec -------------------------------------------------------------------------


def test_preamble_example_bytes() -> None:
    assert port_preamble(0, 8080) == bytes.fromhex("00901f")
    assert port_preamble(1, 8080) == bytes.fromhex("01901f")
    codec = ChannelCodec([8080, 80], role="server")
    assert codec.preamble() == [
        bytes.fromhex("00901f"), bytes.fromhex("01901f"),
        bytes.fromhex("025000"), bytes.fromhex("035000"),
    ]


def test_base64_framing() -> None:
    codec = ChannelCodec([8080], "v4.base64.channel.k8s.io", role="server")
    assert codec.preamble() == ["0kB8=", "1kB8="]
    assert codec.encode(0, b"hello") == "0aGVsbG8="
    assert codec.decode("2aGVsbG8=") == (2, b"hello")
    assert codec.decode("0not base64!") is None


def test_binary_framing() -> None:
    codec = ChannelCodec([80], "v4.channel.k8s.io")
    assert codec.encode(0, b"GET /") == b"\x00GET /"
    assert codec.decode(b"\x01oops") == (1, b"oops")
    assert codec.decode(b"") is None


def test_server_ignores_what_the_kubelet_ignores() -> None:
    codec = ChannelCodec([80, 81], role="server")
    assert codec.receive(b"") == []
    assert codec.receive(b"\x01to-error-channel") == []
    assert codec.receive(b"\x04beyond") == []
    assert codec.receive(b"\x02data") == [PortData(1, b"data")]
    b64 = ChannelCodec([80], "v4.base64.channel.k8s.io", role="server")
    assert b64.receive("0!!!") == []
    assert b64.receive("0aGk=") == [PortData(0, b"hi")]


def test_client_checks_preamble_then_delivers() -> None:
    codec = ChannelCodec([8080, 8080])
    assert codec.receive(bytes.fromhex("00901f")) == [PortConfirmed(0, 0)]
    assert codec.receive(bytes.fromhex("01901f")) == [PortConfirmed(0, 1)]
    assert codec.receive(b"\x00data") == [PortData(0, b"data")]
    assert codec.receive(b"\x01refused") == [PortError(0, "refused")]
    with pytest.raises(ProtocolError, match="unexpected port number in initial channel frame: 80"):
        codec.receive(bytes.fromhex("025000"))
    with pytest.raises(ProtocolError, match="unexpected initial channel frame data size"):
        codec.receive(b"\x03\x90\x1f\x00")
    with pytest.raises(ProtocolError, match=r"^unexpected channel 4$"):
        codec.receive(b"\x04x")


# ---- client ↔ server ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""])
async def test_end_to_end(protocol: str) -> None:
    c, s = trio.testing.memory_stream_pair()
    ports = [8080, 5432, 8080]
    client = ChannelClient(WebSocketConnection(c, "client", subprotocol=protocol), ports)
    blob = os.urandom(600_000)

    async def kubelet() -> None:
        ws = WebSocketConnection(s, "server", subprotocol=protocol)
        server = await ChannelServer.open(ws, ports)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            # port 0: echo until 6 bytes seen, then end normally
            assert await server.stream(0).receive_some() == b"hello!"
            await server.stream(0).send_all(b"HELLO!")
            await server.stream(0).aclose()
            # port 1: the pod refused
            await server.finish(1, "error forwarding port 5432 to pod p, uid : refused")
            # port 2: a big download
            await server.stream(2).send_all(blob)
            await server.finish(2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kubelet)
        nursery.start_soon(client.run)
        await client.stream(0).send_all(b"hello!")
        assert await client.stream(0).receive_some() == b"HELLO!"
        assert await client.stream(1).receive_some() == b""
        assert client.error(1) == "error forwarding port 5432 to pod p, uid : refused"
        got = bytearray()
        while chunk := await client.stream(2).receive_some():
            got += chunk
        assert bytes(got) == blob
        assert client.error(0) is None and client.error(2) is None
    # all ports done → the server closed with 1000 and run() returned
    assert client.ws.close_code == 1000


async def test_client_closes_websocket_when_all_streams_closed() -> None:
    c, s = trio.testing.memory_stream_pair()
    client = ChannelClient(WebSocketConnection(c, "client"), [80])
    closed = trio.Event()

    async def kubelet() -> None:
        server = await ChannelServer.open(WebSocketConnection(s, "server"), [80])
        await server.run()
        closed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kubelet)
        nursery.start_soon(client.run)
        await client.stream(0).send_all(b"x")
        await client.stream(0).aclose()
        await closed.wait()
    assert client.ws.close_code == 1000


async def test_client_rejects_wrong_preamble() -> None:
    c, s = trio.testing.memory_stream_pair()
    client = ChannelClient(WebSocketConnection(c, "client"), [80])
    server = await ChannelServer.open(WebSocketConnection(s, "server"), [81])
    with pytest.raises(ProtocolError):
        await client.run()
    assert await client.stream(0).receive_some() == b""
    assert await server.ws.receive_message() is None
    assert server.ws.close_code == 1002


async def test_stalled_port_stops_the_pump() -> None:
    c, s = trio.testing.memory_stream_pair()
    client = ChannelClient(WebSocketConnection(c, "client"), [80], buffer_limit=1000)
    server = await ChannelServer.open(WebSocketConnection(s, "server"), [80])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        for _ in range(50):
            await server.stream(0).send_all(b"x" * 400)
            await trio.testing.wait_all_tasks_blocked()
        # the client's buffer holds about its limit; the rest waits on the wire
        assert client.stream(0)._queue._size <= 1400
        got = 0
        while got < 50 * 400:
            got += len(await client.stream(0).receive_some())
        nursery.cancel_scope.cancel()


async def test_a_large_data_message_is_handed_on_as_it_arrives() -> None:
    """Half a 1 MiB message is readable before the rest is sent, and the client holds
    about its buffer limit, not the message."""
    from pfcompose.wire.ws_frames import binary_frame_parts

    c, s = trio.testing.memory_stream_pair()
    client = ChannelClient(WebSocketConnection(c, "client", receive_size=16384), [80],
                           buffer_limit=32768)
    server = await ChannelServer.open(WebSocketConnection(s, "server"), [80])
    payload = os.urandom(1 << 20)
    frame = b"".join(binary_frame_parts([b"\x00", payload], mask=False))
    half = len(frame) // 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await s.send_all(frame[:half])
        got = bytearray()
        with trio.fail_after(5):
            while len(got) < half - 20:
                got += await client.stream(0).receive_some()
                assert client.stream(0)._queue._size <= 32768 + 16384
            await s.send_all(frame[half:])
            while len(got) < len(payload):
                got += await client.stream(0).receive_some()
        assert got == payload
        nursery.cancel_scope.cancel()
    del server


# ---- the official Python client's handshake and framing (websocket-client) --------


async def test_websocket_client_library_compatible() -> None:
    websocket = pytest.importorskip("websocket")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def kubelet(stream: trio.SocketStream) -> None:
        request, trailing = await read_request(stream)
        ws, protocol, ports = await accept_channel_websocket(request, stream, trailing)
        assert (protocol, ports) == ("v4.channel.k8s.io", (8080,))
        server = await ChannelServer.open(ws, ports)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
            data = await server.stream(0).receive_some()
            await server.stream(0).send_all(data.upper())
            await server.stream(0).aclose()

    def python_client() -> list[bytes]:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/v1/namespaces/default/pods/p/portforward?ports=8080",
            header=["sec-websocket-protocol: v5.channel.k8s.io,v4.channel.k8s.io"],
            timeout=10,
        )
        frames = [ws.recv(), ws.recv()]
        ws.send_binary(b"\x00ping")
        frames.append(ws.recv())
        op, _ = ws.recv_data(control_frame=True)
        frames.append(bytes([op]))
        ws.close()
        return frames

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, kubelet, listeners)
            frames = await trio.to_thread.run_sync(python_client)
            nursery.cancel_scope.cancel()
    assert frames == [b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x00PING", b"\x08"]
