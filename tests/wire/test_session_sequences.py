"""The per-connection sequences of client-go (§8.2) and the kubelet (§9), seen on the wire.

A raw sans-IO peer on the other end of a memory stream records exactly which
frames the session sends, so "RST only if we have not sent FIN" and the close
order are checked byte-for-byte, not just by behaviour. Also: sessions over TLS.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
import trustme

from pfcompose.wire.session import SpdySession, SpdyStream, open_session
from pfcompose.wire.spdy import (
    DataReceived,
    Event,
    GoAwayReceived,
    SpdyConnection,
    StreamOpened,
    StreamReplied,
    StreamResetReceived,
)

HEADERS = {"streamType": "error", "port": "8080", "requestID": "0"}


class RawPeer:
    """The far end, driven by hand: a SpdyConnection over a memory stream."""

    def __init__(self, stream: trio.abc.Stream, role: str) -> None:
        self.stream = stream
        self.conn = SpdyConnection("server" if role == "server" else "client")

    async def events(self) -> list[Event]:
        """Everything the session has sent by now (read until all tasks are blocked)."""
        out: list[Event] = []

        async def reader() -> None:
            while data := await self.stream.receive_some():
                out.extend(self.conn.receive_data(data))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        return out

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def client_and_raw_server() -> AsyncIterator[tuple[SpdySession, RawPeer]]:
    a, b = trio.testing.memory_stream_pair()
    async with open_session(a, "client") as session:
        yield session, RawPeer(b, "server")


async def open_pair(session: SpdySession, peer: RawPeer, headers: dict[str, str]) -> SpdyStream:
    async with trio.open_nursery() as nursery:
        result: list[SpdyStream] = []

        async def opener() -> None:
            result.append(await session.open_stream(headers))

        nursery.start_soon(opener)
        (opened,) = await peer.events()
        assert isinstance(opened, StreamOpened)
        peer.conn.reply(opened.stream_id)
        await peer.flush()
    return result[0]


async def test_client_go_sequence_when_the_pod_side_ends_first() -> None:
    async with client_and_raw_server() as (session, peer):
        error = await open_pair(session, peer, HEADERS)
        await error.send_eof()  # step 3
        assert await peer.events() == [DataReceived(1, b"", True)]
        data = await open_pair(session, peer, {**HEADERS, "streamType": "data"})
        await data.send_all(b"GET / HTTP/1.0\r\n\r\n")
        assert await peer.events() == [DataReceived(3, b"GET / HTTP/1.0\r\n\r\n")]
        peer.conn.send_data(3, b"HTTP/1.0 200 OK\r\n\r\n", fin=True)
        peer.conn.send_data(1, b"", fin=True)
        await peer.flush()
        assert await data.receive_some() == b"HTTP/1.0 200 OK\r\n\r\n"
        assert await data.receive_some() == b""
        data.reset()  # step 8: we have not sent FIN on data → RST CANCEL
        assert await error.receive_some() == b""  # step 9
        await error.aclose()  # closed both ways: nothing on the wire
        assert await peer.events() == [StreamResetReceived(3, 5)]


async def test_client_go_sequence_after_local_eof_resets_nothing() -> None:
    async with client_and_raw_server() as (session, peer):
        error = await open_pair(session, peer, HEADERS)
        await error.send_eof()
        assert await peer.events() == [DataReceived(1, b"", True)]
        data = await open_pair(session, peer, {**HEADERS, "streamType": "data"})
        await data.send_all(b"bye")
        await data.send_eof()  # local EOF propagated as FIN
        peer.conn.send_data(3, b"late reply", fin=True)
        await peer.flush()
        assert await data.receive_some() == b"late reply"  # still read after our FIN
        data.reset()  # FIN already sent: no RST
        await data.aclose()
        error.reset()  # no FIN from the server yet, but we sent ours: no RST either
        assert await peer.events() == [DataReceived(3, b"bye"), DataReceived(3, b"", True)]


async def test_session_aclose_resets_open_streams_then_goaway() -> None:
    a, b = trio.testing.memory_stream_pair()
    peer = RawPeer(b, "server")
    async with open_session(a, "client") as session:
        first = await open_pair(session, peer, HEADERS)
        second = await open_pair(session, peer, HEADERS)
        await first.send_eof()
        assert second.stream_id == 3
    assert await peer.events() == [
        DataReceived(1, b"", True),
        StreamResetReceived(3, 5),  # stream 1 already sent FIN: not reset
        GoAwayReceived(0, 0),  # client-go: last-good 0
    ]
    assert session.close_reason == "closed"


async def test_kubelet_sequence_error_text_then_fin() -> None:
    a, b = trio.testing.memory_stream_pair()
    peer = RawPeer(b, "client")
    async with open_session(a, "server") as server:
        peer.conn.open_stream(HEADERS)
        peer.conn.open_stream({**HEADERS, "streamType": "data"})
        await peer.flush()
        error = await server.accept_stream()
        data = await server.accept_stream()
        assert (error.headers["streamtype"], data.headers["streamtype"]) == ("error", "data")
        await error.reply()
        await data.reply()
        await error.send_all(b"error forwarding port 8080 to pod abc, uid : refused")
        await error.send_eof()
        await data.send_eof()
        assert await peer.events() == [
            StreamReplied(1, {}),
            StreamReplied(3, {}),
            DataReceived(1, b"error forwarding port 8080 to pod abc, uid : refused"),
            DataReceived(1, b"", True),
            DataReceived(3, b"", True),
        ]
        # the client's FIN on data is honoured as a half-close; then both done
        peer.conn.send_data(3, fin=True)
        peer.conn.send_data(1, fin=True)
        await peer.flush()
        assert await data.receive_some() == b"" and data.done and error.done
        # EPIPE/ECONNRESET path of 1.32 kubelets: RST both without text
        peer.conn.open_stream({**HEADERS, "requestID": "1"})
        peer.conn.open_stream({**HEADERS, "requestID": "1", "streamType": "data"})
        await peer.flush()
        e2, d2 = await server.accept_stream(), await server.accept_stream()
        await e2.reply()
        await d2.reply()
        e2.reset()
        d2.reset()
        events = await peer.events()
        assert events[-2:] == [StreamResetReceived(5, 5), StreamResetReceived(7, 5)]


async def test_sessions_over_tls() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listeners = await trio.open_ssl_over_tcp_listeners(0, server_ctx, host="127.0.0.1")
    port = listeners[0].transport_listener.socket.getsockname()[1]
    payloads = {i: bytes([i]) * (1000 * i + 1) for i in range(20)}
    results: dict[int, bytes] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                conn = await listeners[0].accept()
                async with open_session(conn, "server") as server:
                    for _ in range(20):
                        stream = await server.accept_stream()
                        await stream.reply()
                        nursery.start_soon(echo, stream)
                    await server.wait_closed()

            async def echo(stream: SpdyStream) -> None:
                data = bytearray()
                while chunk := await stream.receive_some():
                    data += chunk
                await stream.send_all(data)
                await stream.send_eof()

            nursery.start_soon(serve)
            tls = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_ctx, https_compatible=True
            )
            async with open_session(tls, "client") as client, trio.open_nursery() as streams:

                async def one(i: int) -> None:
                    stream = await client.open_stream({"requestID": str(i)})
                    await stream.send_all(payloads[i])
                    await stream.send_eof()
                    data = bytearray()
                    while chunk := await stream.receive_some():
                        data += chunk
                    results[i] = bytes(data)

                for i in payloads:
                    streams.start_soon(one, i)
            await listeners[0].aclose()
    assert results == payloads
