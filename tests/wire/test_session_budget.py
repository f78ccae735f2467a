"""The session-wide receive budget: bounded memory, a lone stream's large buffer,
no starvation or deadlock when one consumer stalls, and bytes intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import pfcompose.wire.session as session_module
from pfcompose.wire.session import (
    DEFAULT_MAX_BUFFER,
    DEFAULT_READ_SIZE,
    SpdySession,
    SpdyStream,
    open_session,
)
from pfcompose.wire.spdy import SpdyConnection, StreamResetReceived

KiB = 1024


def pattern(index: int, size: int) -> bytes:
    """Distinct bytes per stream, so a byte delivered to the wrong stream shows."""
    block = bytes((index * 7 + i) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


@asynccontextmanager
async def pair(**client_opts: Any) -> AsyncIterator[tuple[SpdySession, SpdySession]]:
    """A client with ``client_opts`` and a server, over an unbounded memory pipe (the
    server's writes never block: whatever the client does not read piles up in the
    pipe, outside the client session, so its own buffering is what is measured)."""
    a, b = trio.testing.memory_stream_pair()
    async with (
        open_session(a, "client", **client_opts) as client,
        open_session(b, "server") as server,
    ):
        yield client, server


async def open_streams(
    client: SpdySession, server: SpdySession, count: int
) -> tuple[list[SpdyStream], list[SpdyStream]]:
    """``count`` client streams and the server's side of each, replied."""
    local: list[SpdyStream] = []
    remote: list[SpdyStream] = []
    for i in range(count):
        local.append(await client.open_stream({"requestid": str(i)}, wait=False))
        remote.append(await server.accept_stream())
        await remote[-1].reply()
    for stream in local:
        await stream.wait_replied(5)
    return local, remote


async def read_exactly(stream: SpdyStream, size: int, piece: int | None = None) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = await stream.receive_some(piece)
        assert chunk, f"EOF after {len(out)} of {size} bytes"
        out += chunk
    return bytes(out)


async def test_many_streams_stay_within_the_budget() -> None:
    budget, max_buffer, read_size = 256 * KiB, 64 * KiB, 16 * KiB
    size, count = 100 * KiB, 20  # 2000 KiB offered, far past the budget
    opts = {"receive_budget": budget, "max_buffer": max_buffer, "read_size": read_size}
    with trio.fail_after(20):
        async with pair(**opts) as (client, server):
            local, remote = await open_streams(client, server, count)
            for start in range(0, size, 4 * KiB):  # interleaved, as busy connections are
                for i, stream in enumerate(remote):
                    await stream.send_all(pattern(i, size)[start : start + 4 * KiB])
            for stream in remote:
                await stream.send_eof()
            await trio.testing.wait_all_tasks_blocked()
            assert budget <= client.buffered_bytes <= budget + read_size
            assert client.buffered_bytes == sum(s.buffered_bytes for s in local)
            assert all(s.buffered_bytes <= max_buffer + read_size for s in local)
            got: dict[int, bytes] = {}

            async def drain(i: int) -> None:
                got[i] = await read_exactly(local[i], size, 7 * KiB)
                assert await local[i].receive_some() == b""

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(drain, i)
            assert [got[i] == pattern(i, size) for i in range(count)] == [True] * count
            assert client.buffered_bytes == 0


async def test_a_lone_stream_still_gets_its_large_buffer() -> None:
    with trio.fail_after(20):
        async with pair() as (client, server):  # the defaults: 1 MiB per stream, 16 MiB in all
            (local,), (remote,) = await open_streams(client, server, 1)
            payload = pattern(1, 3 * DEFAULT_MAX_BUFFER)
            await remote.send_all(payload)
            await trio.testing.wait_all_tasks_blocked()
            # the reader stopped at max_buffer, not at some share of the budget
            limit = DEFAULT_MAX_BUFFER
            assert limit <= local.buffered_bytes <= limit + DEFAULT_READ_SIZE
            assert client.buffered_bytes == local.buffered_bytes
            assert await read_exactly(local, len(payload)) == payload


async def test_a_stalled_consumer_below_its_limit_does_not_starve_the_others() -> None:
    # One application stops reading with 100 KiB pending (less than max_buffer):
    # as before the budget, the session keeps reading for everyone else.
    budget, max_buffer, read_size = 256 * KiB, 128 * KiB, 16 * KiB
    opts = {"receive_budget": budget, "max_buffer": max_buffer, "read_size": read_size}
    with trio.fail_after(20):
        async with pair(**opts) as (client, server):
            (stalled, busy), (r_stalled, r_busy) = await open_streams(client, server, 2)
            pending = pattern(1, 100 * KiB)
            bulk = pattern(2, 4 << 20)  # 16 × the budget
            await r_stalled.send_all(pending)
            await r_busy.send_all(bulk)
            await r_busy.send_eof()
            assert await read_exactly(busy, len(bulk), 5 * KiB) == bulk
            assert await busy.receive_some() == b""
            assert stalled.buffered_bytes == len(pending)
            assert await read_exactly(stalled, len(pending)) == pending


async def test_a_full_stream_stalls_the_session_until_its_consumer_drains() -> None:
    # Head-of-line blocking as with Go: a stream at max_buffer stops the reader, so
    # another stream's bytes wait; they flow again as soon as the full one is read.
    budget, max_buffer, read_size = 1024 * KiB, 64 * KiB, 16 * KiB
    opts = {"receive_budget": budget, "max_buffer": max_buffer, "read_size": read_size}
    with trio.fail_after(20):
        async with pair(**opts) as (client, server):
            (full, other), (r_full, r_other) = await open_streams(client, server, 2)
            flood = pattern(1, 512 * KiB)
            await r_full.send_all(flood)
            await r_other.send_all(b"behind the flood")
            await trio.testing.wait_all_tasks_blocked()
            assert max_buffer <= full.buffered_bytes <= max_buffer + read_size
            assert other.buffered_bytes == 0
            async with trio.open_nursery() as nursery:

                async def read_other() -> None:
                    assert await read_exactly(other, 16) == b"behind the flood"

                nursery.start_soon(read_other)
                assert await read_exactly(full, len(flood), 10 * KiB) == flood


async def test_many_slow_readers_against_a_tiny_budget_all_finish() -> None:
    # The budget is used up over and over; every consumer's take must wake the
    # paused reader when it frees space (no lost wake-up, no deadlock).
    budget, max_buffer, read_size = 48 * KiB, 32 * KiB, 8 * KiB
    opts = {"receive_budget": budget, "max_buffer": max_buffer, "read_size": read_size}
    size, count = 96 * KiB, 40
    with trio.fail_after(30):
        async with pair(**opts) as (client, server):
            local, remote = await open_streams(client, server, count)
            peak = 0
            got: dict[int, bytes] = {}

            async def write(i: int) -> None:
                data = pattern(i, size)
                for start in range(0, size, 12 * KiB):
                    await remote[i].send_all(data[start : start + 12 * KiB])
                await remote[i].send_eof()

            async def read(i: int) -> None:
                nonlocal peak
                out = bytearray()
                while chunk := await local[i].receive_some(3 * KiB + i):
                    out += chunk
                    peak = max(peak, client.buffered_bytes)
                    await trio.sleep(0)
                got[i] = bytes(out)

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(write, i)
                    nursery.start_soon(read, i)
            assert all(got[i] == pattern(i, size) for i in range(count))
            assert peak <= budget + read_size
            assert client.buffered_bytes == 0


async def test_peek_leaves_bytes_buffered_until_consumed() -> None:
    with trio.fail_after(10):
        async with pair() as (client, server):
            (local,), (remote,) = await open_streams(client, server, 1)
            await remote.send_all(b"hello world")
            await remote.send_eof()
            await trio.testing.wait_all_tasks_blocked()
            view = await local.peek()
            assert bytes(view) == b"hello world"
            assert client.buffered_bytes == local.buffered_bytes == 11
            local.consume(6)
            assert client.buffered_bytes == 5
            assert bytes(await local.peek()) == b"world"
            with pytest.raises(ValueError):
                local.consume(6)
            local.consume(5)
            assert client.buffered_bytes == 0
            assert bytes(await local.peek()) == b""  # the peer's FIN


async def test_reset_stream_gives_its_share_back() -> None:
    opts = {"receive_budget": 64 * KiB, "max_buffer": 64 * KiB, "read_size": 16 * KiB}
    with trio.fail_after(10):
        async with pair(**opts) as (client, server):
            (dropped, kept), (r_dropped, r_kept) = await open_streams(client, server, 2)
            await r_dropped.send_all(pattern(1, 200 * KiB))
            await r_kept.send_all(b"after the reset")
            await trio.testing.wait_all_tasks_blocked()
            assert client.buffered_bytes >= 64 * KiB and kept.buffered_bytes == 0
            size = len(await dropped.peek())
            await dropped.aclose()  # the application went away: its bytes are dropped
            dropped.consume(size)  # after a reset: nothing left to consume, no error
            assert await read_exactly(kept, 15) == b"after the reset"
            assert client.buffered_bytes == 0


async def test_too_many_unaccepted_streams_pause_the_reader_not_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Go's reader blocks while its new-stream handler runs; refusing would lose
    # connections that were opened all at once.
    monkeypatch.setattr(session_module, "MAX_PENDING_ACCEPT", 3)
    raw = SpdyConnection("client")
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with open_session(a, "server") as server:
            for i in range(8):
                raw.open_stream({"requestid": str(i)})
            await b.send_all(raw.data_to_send())
            await trio.testing.wait_all_tasks_blocked()
            assert server._paused  # one read brought all eight: the reader stops after it
            assert len(server._accept_queue) == 8
            accepted = []
            for _ in range(8):
                stream = await server.accept_stream()
                await stream.reply()
                accepted.append(stream.headers["requestid"])
            assert accepted == [str(i) for i in range(8)]
            await trio.testing.wait_all_tasks_blocked()
            events = raw.receive_data(await b.receive_some())
            assert [type(e).__name__ for e in events] == ["StreamReplied"] * 8
            assert not any(isinstance(e, StreamResetReceived) for e in events)


def test_budget_must_be_positive() -> None:
    a, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="receive_budget"):
        SpdySession(a, "client", receive_budget=0)
