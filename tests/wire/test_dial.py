"""Transport selection and fallback against a loopback server (§4.1, §13.3)."""

from __future__ import annotations

import functools
import json

import pytest
import trio
from wirehelp import read_request

from pfcompose.wire.channel import ChannelServer
from pfcompose.wire.dial import dial_channel, dial_spdy
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import UpgradeError
from pfcompose.wire.handshake import UpgradeRejected, classify_upgrade
from pfcompose.wire.upgrade_server import (
    accept_channel_websocket,
    accept_spdy,
    accept_spdy_over_websocket,
)

PATH = "/api/v1/namespaces/default/pods/p/portforward"
NOT_FOUND = json.dumps(
    {"kind": "Status", "apiVersion": "v1", "status": "Failure",
     "message": 'pods "p" not found', "reason": "NotFound", "code": 404}
).encode()


class FakeApiServer:
    """Answers port-forward upgrades; ``refuse`` lists the kinds answered with 404."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        request, trailing = await read_request(stream)
        kind = classify_upgrade(request)
        self.seen.append((request.method.decode(), kind))
        try:
            if kind in self.refuse:
                await stream.send_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(NOT_FOUND)}\r\n\r\n".encode() + NOT_FOUND
                )
            elif kind == "spdy":
                s, _ = await accept_spdy(request, stream, trailing)
                await s.send_all(await s.receive_some())
            elif kind == "spdy-over-websocket":
                t, _ = await accept_spdy_over_websocket(request, stream, trailing)
                await t.send_all(await t.receive_some())
                assert await t.receive_some() == b""
            else:
                ws, protocol, ports = await accept_channel_websocket(request, stream, trailing)
                server = await ChannelServer.open(ws, ports, protocol)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.run)
                    data = await server.stream(0).receive_some()
                    await server.stream(0).send_all(data[::-1])
                    await server.finish(0, "done")
        except UpgradeRejected:
            pass
        finally:
            await stream.aclose()


async def serve(nursery: trio.Nursery, api: FakeApiServer) -> Endpoint:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, api.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return Endpoint("127.0.0.1", port, headers=(("Authorization", "Bearer T"),))


async def echo_check(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"spdy-bytes")
    assert await stream.receive_some() == b"spdy-bytes"
    await stream.aclose()


@pytest.mark.parametrize(
    ("mode", "refuse", "used", "seen"),
    [
        ("auto", set(), "spdy-over-websocket", [("GET", "spdy-over-websocket")]),
        ("auto", {"spdy-over-websocket"}, "spdy",
         [("GET", "spdy-over-websocket"), ("POST", "spdy")]),
        ("spdy", set(), "spdy", [("POST", "spdy")]),
        ("spdy-over-websocket", set(), "spdy-over-websocket", [("GET", "spdy-over-websocket")]),
    ],
)
async def test_dial_modes(mode: str, refuse: set[str], used: str, seen: list) -> None:
    api = FakeApiServer(refuse)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoint = await serve(nursery, api)
            stream, transport = await dial_spdy(endpoint, PATH, mode)  # type: ignore[arg-type]
            assert transport == used
            await echo_check(stream)
            nursery.cancel_scope.cancel()
    assert api.seen == seen


@pytest.mark.parametrize("mode", ["auto", "spdy-over-websocket", "spdy"])
async def test_dial_both_refused(mode: str) -> None:
    api = FakeApiServer({"spdy", "spdy-over-websocket"})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoint = await serve(nursery, api)
            with pytest.raises(UpgradeError) as info:
                await dial_spdy(endpoint, PATH, mode)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
    assert (info.value.status, info.value.message, info.value.reason) == (
        404, 'pods "p" not found', "NotFound")
    assert len(api.seen) == (2 if mode == "auto" else 1)


async def test_connection_refused_does_not_fall_back() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(OSError):
        await dial_spdy(Endpoint("127.0.0.1", port), PATH, "auto")


async def test_dial_channel() -> None:
    api = FakeApiServer(set())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoint = await serve(nursery, api)
            client = await dial_channel(endpoint, PATH, [8080])
            nursery.start_soon(client.run)
            await client.stream(0).send_all(b"abc")
            assert await client.stream(0).receive_some() == b"cba"
            assert await client.stream(0).receive_some() == b""
            assert client.error(0) == "done"
            nursery.cancel_scope.cancel()
    assert api.seen == [("GET", "websocket")]
