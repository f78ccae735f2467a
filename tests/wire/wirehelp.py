"""Helpers shared by the wire tests: stream pairs and a one-request h11 reader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing


async def tcp_pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def mem_pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    return trio.testing.memory_stream_pair()


PAIRS = [pytest.param(mem_pair, id="memory"), pytest.param(tcp_pair, id="tcp")]
Pair = Callable[[], Awaitable[tuple[trio.abc.Stream, trio.abc.Stream]]]


async def read_request(stream: trio.abc.ReceiveStream) -> tuple[h11.Request, bytes]:
    """Server side: parse one request with h11, as the sandbox does; also the bytes
    read past it (what an upgraded protocol must not lose)."""
    conn = h11.Connection(h11.SERVER)
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            assert request is not None
            return request, conn.trailing_data[0]
