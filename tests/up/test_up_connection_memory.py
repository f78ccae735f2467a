"""connection.py's memory rules over a real session: quiet connections hold no send
slot, a slow application's bytes stay in the session buffer, bytes arrive intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from pfcompose.up.connection import SEND_SLOTS, Outcome, Traffic, forward_over_session
from pfcompose.wire.session import SpdySession, SpdyStream, open_session

KiB = 1024


async def echo_kubelet(server: SpdySession) -> None:
    """Accept error/data pairs; echo each data stream until its FIN, then FIN.
    Error streams end at once without text (a pair that went well)."""

    async def echo(stream: SpdyStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        while True:
            stream = await server.accept_stream()
            await stream.reply()
            if stream.headers["streamtype"] == "data":
                nursery.start_soon(echo, stream)
            else:
                await stream.send_eof()


@asynccontextmanager
async def forwarder(
    *, max_buffer: int = 1 << 20
) -> AsyncIterator[tuple[SpdySession, trio.SocketListener, trio.Nursery]]:
    """A client session to an echoing server session, and a loopback listener."""
    a, b = trio.testing.memory_stream_pair()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with (
        listener,
        open_session(a, "client", max_buffer=max_buffer) as client,
        open_session(b, "server") as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo_kubelet, server)
        yield client, listener, nursery
        nursery.cancel_scope.cancel()


async def connect(
    client: SpdySession,
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    traffic: Traffic,
    outcomes: list[Outcome],
    request_id: int,
) -> trio.SocketStream:
    """One local connection, carried by forward_over_session in ``nursery``."""
    port = listener.socket.getsockname()[1]
    app = await trio.open_tcp_stream("127.0.0.1", port)
    local = await listener.accept()

    async def carry() -> None:
        outcomes.append(
            await forward_over_session(
                client,
                local,
                local_port=port,
                remote_port=80,
                request_id=request_id,
                traffic=traffic,
            )
        )

    nursery.start_soon(carry)
    return app


async def test_quiet_connections_hold_no_send_slot() -> None:
    traffic = Traffic()
    outcomes: list[Outcome] = []
    with trio.fail_after(20):
        async with forwarder() as (client, listener, _), trio.open_nursery() as nursery:
            quiet = [
                await connect(client, listener, nursery, traffic, outcomes, i)
                for i in range(SEND_SLOTS + 8)
            ]
            await trio.testing.wait_all_tasks_blocked()
            busy = await connect(client, listener, nursery, traffic, outcomes, 999)
            payload = bytes(range(256)) * 1024  # 256 KiB
            await busy.send_all(payload)
            await busy.send_eof()
            got = bytearray()
            while data := await busy.receive_some(64 * KiB):
                got += data
            assert got == payload
            for app in [busy, *quiet]:
                await app.aclose()
        # every carrier has returned (the nursery waited for them)
        assert [o.error for o in outcomes] == [None] * (SEND_SLOTS + 9)
        assert traffic.bytes_in == traffic.bytes_out == len(payload)


async def test_a_slow_application_leaves_its_bytes_in_the_session_buffer() -> None:
    traffic = Traffic()
    outcomes: list[Outcome] = []
    max_buffer = 64 * KiB
    with trio.fail_after(20):
        async with (
            forwarder(max_buffer=max_buffer) as (client, listener, _),
            trio.open_nursery() as nursery,
        ):
            app = await carried(client, listener, nursery, traffic, outcomes)
            await check_slow_application(client, app, max_buffer)
        assert outcomes == [Outcome(None)]


async def carried(
    client: SpdySession,
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    traffic: Traffic,
    outcomes: list[Outcome],
) -> trio.SocketStream:
    return await connect(client, listener, nursery, traffic, outcomes, 1)


async def check_slow_application(
    client: SpdySession, app: trio.SocketStream, max_buffer: int
) -> None:
    payload = bytes(i % 253 for i in range(8 << 20))  # more than the kernel buffers
    async with trio.open_nursery() as inner:

        async def send() -> None:
            await app.send_all(payload)
            await app.send_eof()

        inner.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        # The application reads nothing: what the kernel could not take waits in
        # the session (bounded there), not in a chunk the pump holds.
        assert 0 < client.buffered_bytes <= max_buffer + 256 * KiB
        got = bytearray()
        while data := await app.receive_some(64 * KiB):
            got += data
    assert got == payload
    await app.aclose()
