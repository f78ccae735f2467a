"""Client-role sessions against server-role sessions: memory streams, lockstep, loopback TCP."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from pfcompose.wire.errors import StreamOpenTimeout
from pfcompose.wire.session import SessionLost, SpdySession, SpdyStream, StreamReset, open_session
from pfcompose.wire.spdy import RstStatus, SpdyConnection, StreamResetReceived

KINDS = ["memory", "lockstep", "tcp"]
ERROR = {"streamType": "error", "port": "80", "requestID": "0"}


@asynccontextmanager
async def transport_pair(kind: str) -> AsyncIterator[tuple[trio.abc.Stream, trio.abc.Stream]]:
    if kind == "memory":
        yield trio.testing.memory_stream_pair()
    elif kind == "lockstep":
        yield trio.testing.lockstep_stream_pair()
    else:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        try:
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            server = await listeners[0].accept()
        finally:
            await listeners[0].aclose()
        yield client, server


@asynccontextmanager
async def sessions(kind: str, **kwargs: Any) -> AsyncIterator[tuple[SpdySession, SpdySession]]:
    async with (
        transport_pair(kind) as (a, b),
        open_session(a, "client", **kwargs) as client,
        open_session(b, "server", **kwargs) as server,
    ):
        yield client, server


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some():
        out += chunk
    return bytes(out)


async def echo_server(server: SpdySession, limit: int | None = None) -> None:
    """Accept streams; echo each one's bytes back, then FIN."""

    async def handle(stream: SpdyStream) -> None:
        await stream.reply()
        try:
            data = await read_all(stream)
            await stream.send_all(data)
            await stream.send_eof()
        except (StreamReset, SessionLost, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        count = 0
        while limit is None or count < limit:
            nursery.start_soon(handle, await server.accept_stream())
            count += 1


@pytest.mark.parametrize("kind", KINDS)
async def test_echo_headers_and_counters(kind: str) -> None:
    async with sessions(kind) as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, server, 1)
        stream = await client.open_stream(ERROR)
        assert stream.stream_id == 1
        await stream.send_all(b"x" * 300_000)
        await stream.send_eof()
        assert await read_all(stream) == b"x" * 300_000
    assert client.bytes_out >= 300_000 and server.bytes_in >= 300_000
    assert client.bytes_in >= 300_000 and server.bytes_out >= 300_000


async def test_headers_reach_the_server() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        stream = await server.accept_stream()
        assert stream.headers == {"streamtype": "error", "port": "80", "requestid": "0"}
        assert stream.stream_id == 1 and not stream.local
        await stream.reply()


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_500_concurrent_streams(kind: str) -> None:
    results: dict[int, bytes] = {}

    def payload(i: int) -> bytes:
        return hashlib.sha256(str(i).encode()).digest() * (i % 97 + 1)

    async def one(client: SpdySession, i: int) -> None:
        stream = await client.open_stream({"requestID": str(i), "port": "80"})
        await stream.send_all(payload(i))
        await stream.send_eof()
        results[i] = await read_all(stream)
        await stream.aclose()

    with trio.fail_after(20):
        async with sessions(kind) as (client, server), trio.open_nursery() as nursery:
            nursery.start_soon(echo_server, server, 500)
            async with trio.open_nursery() as clients:
                for i in range(500):
                    clients.start_soon(one, client, i)
    assert len(results) == 500
    assert all(results[i] == payload(i) for i in range(500))


@pytest.mark.parametrize("kind", KINDS)
async def test_half_close_both_ways(kind: str) -> None:
    async with sessions(kind) as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        await remote.reply()
        local = client._streams[1]
        # client → server FIN; server keeps sending
        await local.send_eof()
        await local.send_eof()  # idempotent
        assert await remote.receive_some() == b""
        await remote.send_all(b"still here")
        assert await local.receive_some() == b"still here"
        with pytest.raises(trio.ClosedResourceError):
            await local.send_all(b"no")
        # server → client FIN: the stream is closed both ways, nothing reset
        await remote.send_eof()
        assert await local.receive_some() == b""
        assert local.done and remote.done and 1 not in client._streams


@pytest.mark.parametrize("kind", ["memory", "tcp"])
async def test_server_half_closes_first(kind: str) -> None:
    async with sessions(kind) as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        await remote.reply()
        local = client._streams[1]
        await remote.send_all(b"bye")
        await remote.send_eof()
        assert await read_all(local) == b"bye"
        await local.send_all(b"late data")
        await local.send_eof()
        assert await read_all(remote) == b"late data"


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_both_ways(kind: str) -> None:
    async with sessions(kind) as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, server)
        a = await client.open_stream(ERROR)
        await a.send_all(b"partial")
        a.reset()
        with pytest.raises(trio.ClosedResourceError):
            await a.receive_some()
        server_side = None
        b = await client.open_stream(ERROR)
        # reset by the server: the client sees StreamReset with the status
        for stream in list(server._streams.values()):
            if stream.stream_id == b.stream_id:
                server_side = stream
        assert server_side is not None
        server_side.reset(RstStatus.INTERNAL_ERROR)
        with pytest.raises(StreamReset) as info:
            await b.receive_some()
        assert info.value.status == 6
        with pytest.raises(StreamReset):
            await b.send_all(b"x")
        nursery.cancel_scope.cancel()


async def test_client_reset_is_seen_by_server_and_reset_after_fin_is_silent() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        remote1 = await server.accept_stream()
        await remote1.reply()
        nursery.start_soon(client.open_stream, ERROR)
        remote3 = await server.accept_stream()
        await remote3.reply()
        await trio.testing.wait_all_tasks_blocked()
        one, three = client._streams[1], client._streams[3]
        await one.send_all(b"abc")
        one.reset()
        assert await remote1.receive_some() == b"abc"  # data before the RST is kept
        with pytest.raises(StreamReset) as info:
            await remote1.receive_some()
        assert info.value.status == RstStatus.CANCEL
        await three.send_eof()
        three.reset()  # FIN already sent: nothing on the wire (spdystream)
        await trio.testing.wait_all_tasks_blocked()
        assert await remote3.receive_some() == b""
        assert remote3.record.reset_by is None


async def test_reject_refuse_and_aclose_resets() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:

        async def reject_one() -> None:
            await (await server.accept_stream()).reject()

        nursery.start_soon(reject_one)
        with pytest.raises(StreamReset, match="Stream reset") as info:
            await client.open_stream(ERROR)
        assert info.value.status == RstStatus.CANCEL
        server.refuse_streams()
        with pytest.raises(StreamReset) as info:
            await client.open_stream(ERROR)
        assert info.value.status == RstStatus.REFUSED_STREAM
        server.refuse_streams(None)
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        await remote.reply()
        await remote.aclose()  # not closed both ways: reset
        await trio.testing.wait_all_tasks_blocked()
        local = client._streams.get(remote.stream_id)
        assert local is None  # the RST removed it
        with pytest.raises(trio.ClosedResourceError):
            await remote.send_all(b"x")


@pytest.mark.parametrize("kind", KINDS)
async def test_goaway_keeps_buffered_data_then_session_lost(kind: str) -> None:
    async with transport_pair(kind) as (a, b), open_session(a, "client") as client:
        async with open_session(b, "server") as server, trio.open_nursery() as nursery:
            nursery.start_soon(client.open_stream, ERROR)
            remote = await server.accept_stream()
            await remote.reply()
            await remote.send_all(b"last words")
            await trio.testing.wait_all_tasks_blocked()
            local = client._streams[1]
        # leaving the server block: RST every stream (our stream was RST'd), GOAWAY, close
        with trio.fail_after(5):
            await client.wait_closed()
        assert client.closed
        assert client.close_reason in ("goaway received (status 0)", "connection closed by peer")
        assert server.close_reason == "closed"
        assert await local.receive_some() == b"last words"
        with pytest.raises((SessionLost, StreamReset)):
            await local.receive_some()
        with pytest.raises(SessionLost):
            await client.open_stream(ERROR)


async def test_goaway_received_ends_session_with_streams_lost() -> None:
    a, b = trio.testing.memory_stream_pair()
    raw = SpdyConnection("server")
    async with open_session(a, "client") as client:
        async with trio.open_nursery() as nursery:
            opened: list[SpdyStream] = []

            async def opener() -> None:
                opened.append(await client.open_stream(ERROR))

            nursery.start_soon(opener)
            raw.receive_data(await b.receive_some())
            raw.reply(1)
            await b.send_all(raw.data_to_send())
        (stream,) = opened
        raw.send_data(1, b"buffered")
        raw.goaway()
        await b.send_all(raw.data_to_send() + struct.pack(">II", 1, 5) + b"never")
        with trio.fail_after(5):
            await client.wait_closed()
        assert client.close_reason == "goaway received (status 0)"
        assert await stream.receive_some() == b"buffered"
        with pytest.raises(SessionLost, match="goaway received"):
            await stream.receive_some()
        with pytest.raises(SessionLost):
            await stream.send_all(b"x")


async def test_ping_round_trip_both_roles() -> None:
    async with sessions("tcp") as (client, server):
        rtt = await client.ping()
        assert 0 <= rtt < 5
        assert await server.ping() >= 0
        assert client._conn._next_ping_id == 3 and server._conn._next_ping_id == 4


async def test_keepalive_pings_and_times_out(autojump_clock: trio.abc.Clock) -> None:
    a, b = trio.testing.memory_stream_pair()
    async with open_session(a, "client", keepalive=5.0) as client:
        # a peer that never answers: two missed pongs in a row end the session
        with trio.fail_after(100):
            await client.wait_closed()
        assert client.close_reason == "ping timeout"
        assert trio.current_time() == pytest.approx(15.0)
        wire = await b.receive_some()
        assert wire[:12] == bytes.fromhex("80030006 00000004 00000001")


async def test_keepalive_with_a_live_peer_keeps_going(autojump_clock: trio.abc.Clock) -> None:
    async with sessions("memory", keepalive=5.0) as (client, server):
        await trio.sleep(62)
        assert not client.closed and not server.closed
        assert client._conn._next_ping_id == 1 + 2 * 12


async def test_open_stream_timeout_resets_the_stream(autojump_clock: trio.abc.Clock) -> None:
    a, b = trio.testing.memory_stream_pair()
    raw = SpdyConnection("server")
    async with open_session(a, "client") as client:
        with pytest.raises(StreamOpenTimeout, match="Timeout occurred"):
            await client.open_stream(ERROR)
        assert trio.current_time() == pytest.approx(30.0)
        await trio.testing.wait_all_tasks_blocked()
        events = raw.receive_data(await b.receive_some())
        assert [type(e).__name__ for e in events] == ["StreamOpened", "StreamResetReceived"]
        assert events[1] == StreamResetReceived(1, RstStatus.CANCEL)


@pytest.mark.parametrize("kind", ["lockstep", "tcp"])
async def test_stalled_reader_does_not_grow_memory(kind: str) -> None:
    max_buffer, read_size = 64 * 1024, 16 * 1024
    total = 4 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)
    opts = {"max_buffer": max_buffer, "read_size": read_size}
    with trio.fail_after(20):
        async with sessions(kind, **opts) as (client, server), trio.open_nursery() as nursery:
            nursery.start_soon(client.open_stream, ERROR)
            remote = await server.accept_stream()
            await remote.reply()
            await trio.testing.wait_all_tasks_blocked()
            local = client._streams[1]
            sent = trio.Event()

            async def writer() -> None:
                await local.send_all(payload)
                await local.send_eof()
                sent.set()

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()  # the writer is blocked by TCP back-pressure
            assert remote.buffered_bytes <= max_buffer + read_size
            assert server._conn.buffered_input <= 8
            # a ping cannot get through either: head-of-line blocking, as with Go
            received = bytearray()
            while chunk := await remote.receive_some(50_000):
                received += chunk
                assert remote.buffered_bytes <= max_buffer + read_size
            assert received == payload
            await sent.wait()


async def test_abort_and_peer_eof() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        await remote.reply()
        await trio.testing.wait_all_tasks_blocked()
        local = client._streams[1]
        receiver_error: list[BaseException] = []

        async def blocked_receive() -> None:
            try:
                await remote.receive_some()
            except SessionLost as exc:
                receiver_error.append(exc)

        nursery.start_soon(blocked_receive)
        await trio.testing.wait_all_tasks_blocked()
        client.abort()
        assert client.closed and client.close_reason == "aborted"
        with pytest.raises(SessionLost, match="aborted"):
            await local.send_all(b"x")
        with trio.fail_after(5):
            await server.wait_closed()
        assert server.close_reason == "connection closed by peer"
        await trio.testing.wait_all_tasks_blocked()
        assert [str(e) for e in receiver_error] == ["connection closed by peer"]
        with pytest.raises(SessionLost):
            await server.accept_stream()
        with pytest.raises(SessionLost):
            await server.ping()


async def test_protocol_error_from_peer_ends_session_with_goaway() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with open_session(a, "server") as server:
        await b.send_all(bytes.fromhex("8003000a 00000000"))  # control type 10: fatal
        with trio.fail_after(5):
            await server.wait_closed()
        assert server.close_reason == "protocol error: invalid control frame type 10"
        assert await b.receive_some() == bytes.fromhex("80030007 00000008 00000000 00000000")


async def test_initial_data_is_parsed_first() -> None:
    raw = SpdyConnection("client")
    raw.open_stream(ERROR)
    a, b = trio.testing.memory_stream_pair()
    async with open_session(a, "server", initial_data=raw.data_to_send()) as server:
        stream = await server.accept_stream()
        assert stream.headers["requestid"] == "0"
        await stream.reply()
        raw.receive_data(await b.receive_some())
        assert raw.stream_state(1) is not None


async def test_concurrent_receivers_are_an_error() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, server)
        stream = await client.open_stream(ERROR)
        nursery.start_soon(stream.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.receive_some()
        nursery.cancel_scope.cancel()


async def test_writes_on_an_unreplied_remote_stream_wait_for_reply() -> None:
    async with sessions("memory") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        done = trio.Event()

        async def write() -> None:
            await remote.send_all(b"after reply")
            done.set()

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        await remote.reply()
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert await client._streams[1].receive_some() == b"after reply"


async def test_cancelled_sender_leaves_framing_intact() -> None:
    payload = bytes(range(256)) * 16384  # 4 MiB
    opts = {"max_buffer": 64 * 1024, "read_size": 16 * 1024, "max_data_frame": 64 * 1024}
    with trio.fail_after(20):
        async with sessions("tcp", **opts) as (client, server), trio.open_nursery() as nursery:
            nursery.start_soon(client.open_stream, ERROR)
            remote = await server.accept_stream()
            await remote.reply()
            await trio.testing.wait_all_tasks_blocked()
            local = client._streams[1]
            with trio.CancelScope() as scope:
                nursery.start_soon(lambda: local.send_all(payload))  # blocks: nobody reads
                await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            got = bytearray()
            with trio.move_on_after(0.5):
                while chunk := await remote.receive_some():
                    got += chunk
            assert 0 < len(got) <= len(payload) and payload.startswith(got)
            # the session still frames correctly: a new stream works both ways
            nursery.start_soon(client.open_stream, ERROR)
            second = await server.accept_stream()
            await second.reply()
            await second.send_all(b"fine")
            await trio.testing.wait_all_tasks_blocked()
            assert await client._streams[3].receive_some() == b"fine"
            assert not client.closed and not server.closed
            nursery.cancel_scope.cancel()


async def test_keepalive_does_not_blame_the_peer_for_our_stall(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    async with (
        open_session(a, "client", keepalive=5.0, max_buffer=64 * 1024) as client,
        open_session(b, "server") as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(client.open_stream, ERROR)
        remote = await server.accept_stream()
        await remote.reply()
        await remote.send_all(bytes(1 << 20))  # fills the client's buffer: its reader stops
        await trio.sleep(60)
        assert not client.closed, client.close_reason
        local = client._streams[1]
        assert local.buffered_bytes <= 64 * 1024 + 256 * 1024
        total = 0
        while total < 1 << 20:
            total += len(await local.receive_some())
        await trio.sleep(30)
        assert not client.closed and not server.closed


class CountingStream(trio.abc.Stream):
    """A transport that records every write (each is one send_all)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def frames_of(write: bytes) -> list[object]:
    peer = SpdyConnection("server")
    return peer.receive_data(write)


async def test_open_streams_sends_every_syn_stream_in_one_write() -> None:
    a, b = trio.testing.memory_stream_pair()
    counted = CountingStream(a)
    async with open_session(counted, "client") as client, open_session(b, "server") as server:
        error, data = await client.open_streams([ERROR, {**ERROR, "streamType": "data"}])
        assert len(counted.writes) == 1
        assert [type(e).__name__ for e in frames_of(counted.writes[0])] == ["StreamOpened"] * 2
        for _ in range(2):
            await (await server.accept_stream()).reply()
        with trio.fail_after(5):
            await error.wait_replied()
            await data.wait_replied()
        assert (error.stream_id, data.stream_id) == (1, 3)


async def test_a_later_fin_rides_with_the_next_write_or_the_flusher() -> None:
    a, b = trio.testing.memory_stream_pair()
    counted = CountingStream(a)
    async with open_session(counted, "client") as client, open_session(b, "server") as server:
        error, data = await client.open_streams([ERROR, {**ERROR, "streamType": "data"}])
        remote = [await server.accept_stream() for _ in range(2)]
        for stream in remote:
            await stream.reply()
        with trio.fail_after(5):
            await error.wait_replied()
            await data.wait_replied()
            writes = len(counted.writes)
            error.send_eof_later()
            await data.send_all(b"hello")  # the same turn: one write carries both
            assert len(counted.writes) == writes + 1
            assert await remote[0].receive_some() == b""  # the error stream's FIN
            assert await remote[1].receive_some() == b"hello"
            # with nothing else to write, the flusher sends it
            again, = await client.open_streams([{**ERROR, "requestID": "1"}])
            other = await server.accept_stream()
            await other.reply()
            await again.wait_replied()
            again.send_eof_later()
            assert await other.receive_some() == b""
