"""The upgrade handshakes: exact bytes both ways, every error answer, glued bytes."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing
from wirehelp import PAIRS, read_request

from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import ProtocolError, UpgradeError
from pfcompose.wire.handshake import (
    UpgradeRejected,
    accept_key,
    classify_upgrade,
    negotiate_channel_websocket,
    negotiate_spdy,
    negotiate_spdy_over_websocket,
    parse_port_query,
)
from pfcompose.wire.upgrade_client import (
    upgrade_channel_websocket,
    upgrade_spdy,
    upgrade_spdy_over_websocket,
)
from pfcompose.wire.upgrade_server import (
    accept_channel_websocket,
    accept_spdy,
    accept_spdy_over_websocket,
)

PATH = "/api/v1/namespaces/default/pods/mypod/portforward"
UA = "kubectl/v1.31.0 (linux/amd64) kubernetes/abcdef0"
EP = Endpoint("127.0.0.1", 6443, headers=(("Authorization", "Bearer TOKEN"),), user_agent=UA)
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's worked example


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[bytes, bytes]:
    """Read up to the blank line; return (head, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, "peer closed before the end of the head"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def req(method: str, target: str, headers: list[tuple[str, str]]) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[("Host", "x"), *headers])


async def scripted(
    response: bytes, client: Callable[[trio.abc.Stream], Awaitable[object]]
) -> tuple[bytes, object]:
    """Run ``client`` against a server that answers ``response``; return (request, result)."""
    c, s = trio.testing.memory_stream_pair()
    seen: list[bytes] = []

    async def server() -> None:
        head, _ = await read_head(s)
        seen.append(head)
        await s.send_all(response)
        await s.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        try:
            result: object = await client(c)
        except BaseException as exc:  # surfaced to the caller as the result
            result = exc
    return seen[0], result


SPDY_REQUEST = (
    f"POST {PATH} HTTP/1.1\r\n"
    "Host: 127.0.0.1:6443\r\n"
    f"User-Agent: {UA}\r\n"
    "Content-Length: 0\r\n"
    "Authorization: Bearer TOKEN\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: portforward.k8s.io\r\n"
    "\r\n"
).encode()

SPDY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
)


# ---- client role: transport A ----------------------------------------------------


async def test_spdy_request_bytes_and_glued_bytes() -> None:
    glued = b"\x80\x03\x00\x04glued-spdy-frame"
    request, result = await scripted(SPDY_101 + glued, lambda t: upgrade_spdy(t, EP, PATH))
    assert request == SPDY_REQUEST
    assert isinstance(result, tuple)
    stream, protocol = result
    assert protocol == "portforward.k8s.io"
    assert await stream.receive_some(5) == glued[:5]
    assert await stream.receive_some() == glued[5:]
    assert await stream.receive_some() == b""


def status_body(message: str, reason: str, code: int) -> bytes:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    ).encode()


def answer(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("response", "status", "message", "reason"),
    [
        (answer("404 Not Found", status_body('pods "x" not found', "NotFound", 404)),
         404, 'pods "x" not found', "NotFound"),
        (answer("403 Forbidden", status_body(
            'pods "x" is forbidden: User "u" cannot create resource "pods/portforward"',
            "Forbidden", 403)), 403,
         'pods "x" is forbidden: User "u" cannot create resource "pods/portforward"',
         "Forbidden"),
        (answer("400 Bad Request", b"  pod x does not have a host assigned\n", "text/plain"),
         400, "unable to upgrade connection: pod x does not have a host assigned", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "unable to upgrade connection: ",
         None),
        (b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\noops\n", 500,
         "unable to upgrade connection: oops", None),
    ],
)
async def test_spdy_non_101(response: bytes, status: int, message: str, reason: str | None) -> None:
    _, err = await scripted(response, lambda t: upgrade_spdy(t, EP, PATH))
    assert isinstance(err, UpgradeError)
    assert (err.status, err.message, str(err), err.reason) == (status, message, message, reason)
    assert err.upgrade_failure


async def test_spdy_protocol_echo_required() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
    _, err = await scripted(response, lambda t: upgrade_spdy(t, EP, PATH))
    assert isinstance(err, UpgradeError)
    assert err.message == (
        'unable to negotiate protocol: client supports "portforward.k8s.io", server returned ""'
    )
    assert not err.upgrade_failure


async def test_spdy_missing_upgrade_headers_in_101() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    )
    _, err = await scripted(response, lambda t: upgrade_spdy(t, EP, PATH))
    assert isinstance(err, UpgradeError)
    assert err.message == "unable to upgrade connection: missing upgrade headers in response"


async def test_garbage_response_is_not_an_upgrade_failure() -> None:
    _, err = await scripted(b"SSH-2.0-OpenSSH\r\n\r\n", lambda t: upgrade_spdy(t, EP, PATH))
    assert isinstance(err, ProtocolError)


# ---- client role: transport B ------------------------------------------------------


def ws_101(key: str, protocol: str | None, extra: bytes = b"") -> bytes:
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
    )
    if protocol is not None:
        head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    return head.encode() + b"\r\n" + extra


async def ws_scripted(
    make_response: Callable[[str], bytes], client: Callable[[trio.abc.Stream], Awaitable[object]]
) -> tuple[bytes, object]:
    c, s = trio.testing.memory_stream_pair()
    seen: list[bytes] = []

    async def server() -> None:
        head, _ = await read_head(s)
        seen.append(head)
        key = next(
            line.split(b": ", 1)[1].decode()
            for line in head.split(b"\r\n")
            if line.startswith(b"Sec-WebSocket-Key: ")
        )
        await s.send_all(make_response(key))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        try:
            result: object = await client(c)
        except BaseException as exc:
            result = exc
    return seen[0], result


async def test_tunnel_request_bytes_and_glued_message() -> None:
    glued = b"\x82\x05hello"  # an unmasked binary message from the server
    request, result = await ws_scripted(
        lambda k: ws_101(k, "SPDY/3.1+portforward.k8s.io", glued),
        lambda t: upgrade_spdy_over_websocket(t, EP, PATH),
    )
    lines = request.split(b"\r\n")
    key = lines[5].split(b": ")[1]
    assert len(base64.b64decode(key)) == 16
    assert request == (
        f"GET {PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1:6443\r\n"
        f"User-Agent: {UA}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n"
        "Authorization: Bearer TOKEN\r\n"
        "\r\n"
    ).encode()
    assert isinstance(result, tuple)
    stream, protocol = result
    assert protocol == "portforward.k8s.io"
    assert await stream.receive_some() == b"hello"


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        (None, 'invalid protocol, expected one of ["SPDY/3.1+portforward.k8s.io"], got ""'),
        ("SPDY/3.1+v2.portforward.k8s.io",
         'invalid protocol, expected one of ["SPDY/3.1+portforward.k8s.io"], '
         'got "SPDY/3.1+v2.portforward.k8s.io"'),
    ],
)
async def test_tunnel_wrong_subprotocol(protocol: str | None, message: str) -> None:
    _, err = await ws_scripted(
        lambda k: ws_101(k, protocol), lambda t: upgrade_spdy_over_websocket(t, EP, PATH)
    )
    assert isinstance(err, UpgradeError)
    assert err.message == message
    assert err.upgrade_failure


async def test_tunnel_bad_accept_is_bad_handshake() -> None:
    _, err = await ws_scripted(
        lambda k: ws_101(KEY, "SPDY/3.1+portforward.k8s.io"),
        lambda t: upgrade_spdy_over_websocket(t, EP, PATH),
    )
    assert isinstance(err, UpgradeError)
    assert (err.message, err.status, err.upgrade_failure) == ("websocket: bad handshake", 101, True)


async def test_tunnel_non_101_is_upgrade_failure() -> None:
    body = status_body('pods "x" not found', "NotFound", 404)
    _, err = await ws_scripted(
        lambda k: answer("404 Not Found", body), lambda t: upgrade_spdy_over_websocket(t, EP, PATH)
    )
    assert isinstance(err, UpgradeError)
    assert (err.message, err.status, err.upgrade_failure) == ('pods "x" not found', 404, True)


# ---- client role: transport C ------------------------------------------------------


async def test_channel_tolerates_empty_protocol_header() -> None:
    request, result = await ws_scripted(
        lambda k: ws_101(k, ""),
        lambda t: upgrade_channel_websocket(t, EP, PATH + "?ports=80,8080", ()),
    )
    assert request.startswith(f"GET {PATH}?ports=80,8080 HTTP/1.1\r\n".encode())
    assert b"Sec-WebSocket-Protocol" not in request
    assert isinstance(result, tuple)
    assert result[1] == ""


async def test_channel_offers_and_gets_v4() -> None:
    request, result = await ws_scripted(
        lambda k: ws_101(k, "v4.channel.k8s.io"),
        lambda t: upgrade_channel_websocket(t, EP, PATH + "?ports=80"),
    )
    assert b"\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n" in request
    assert isinstance(result, tuple)
    assert result[1] == "v4.channel.k8s.io"


# ---- server role: sans-IO answers --------------------------------------------------


def spdy_req(*extra: tuple[str, str], method: str = "POST") -> h11.Request:
    return req(method, PATH, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), *extra])


def test_negotiate_spdy_101_bytes() -> None:
    a = negotiate_spdy(spdy_req(("X-Stream-Protocol-Version", "portforward.k8s.io")))
    assert (a.status, a.protocol, a.data) == (101, "portforward.k8s.io", SPDY_101)


def test_negotiate_spdy_comma_separated_and_first_client_choice() -> None:
    a = negotiate_spdy(
        spdy_req(("X-Stream-Protocol-Version", "v9.k8s.io , portforward.k8s.io")),
        protocols=("portforward.k8s.io", "v9.k8s.io"),
    )
    assert a.protocol == "v9.k8s.io"


def test_negotiate_spdy_missing_version_is_empty_200() -> None:
    a = negotiate_spdy(spdy_req())
    assert a.status == 200
    assert a.data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert a.message == "unable to upgrade: X-Stream-Protocol-Version is required"


def test_negotiate_spdy_403_with_accepted_versions() -> None:
    a = negotiate_spdy(
        spdy_req(("X-Stream-Protocol-Version", "foo"), ("X-Stream-Protocol-Version", "bar"))
    )
    body = (
        b"unable to upgrade: unable to negotiate protocol: client supports [foo bar], "
        b"server accepts [portforward.k8s.io]\n"
    )
    assert a.data == (
        b"HTTP/1.1 403 Forbidden\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"X-Accepted-Stream-Protocol-Versions: portforward.k8s.io\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n" + body
    )


def test_negotiate_spdy_400_missing_upgrade_headers() -> None:
    r = req("POST", PATH, [("Connection", "keep-alive"),
                           ("X-Stream-Protocol-Version", "portforward.k8s.io")])
    a = negotiate_spdy(r)
    assert a.status == 400
    assert a.message == (
        "unable to upgrade: missing upgrade headers in request: "
        'http.Header{"Connection":[]string{"keep-alive"}, '
        '"X-Stream-Protocol-Version":[]string{"portforward.k8s.io"}}'
    )
    assert b"\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n" in a.data
    assert a.data.endswith(a.message.encode() + b"\n")


def ws_req(protocol: str | None, *, target: str = PATH, method: str = "GET",
           key: str = KEY, version: str = "13") -> h11.Request:
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", version)]
    if protocol is not None:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    return req(method, target, headers)


def test_negotiate_tunnel_101_bytes() -> None:
    a = negotiate_spdy_over_websocket(ws_req("SPDY/3.1+portforward.k8s.io"))
    assert a.data == (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ACCEPT}\r\n"
        "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n"
    ).encode()


def test_negotiate_tunnel_errors() -> None:
    a = negotiate_spdy_over_websocket(ws_req("v4.channel.k8s.io"))
    assert a.status == 400
    assert a.data.endswith(b"\r\n\r\nunable to upgrade: no tunneling spdy protocols provided\n")
    a = negotiate_spdy_over_websocket(ws_req("SPDY/3.1+v9.k8s.io"))
    assert a.status == 403
    assert a.data.endswith(
        b"client supports [v9.k8s.io], server accepts [portforward.k8s.io]\n"
    )
    assert b"X-Accepted-Stream-Protocol-Versions: portforward.k8s.io\r\n" in a.data
    a = negotiate_spdy_over_websocket(ws_req("SPDY/3.1+portforward.k8s.io", key="short"))
    assert a.status == 400
    assert b"\r\nSec-Websocket-Version: 13\r\n" in a.data
    assert a.data.endswith(b"\r\n\r\nBad Request\n")
    a = negotiate_spdy_over_websocket(ws_req("SPDY/3.1+portforward.k8s.io", method="POST"))
    assert a.status == 405
    a = negotiate_spdy_over_websocket(ws_req("SPDY/3.1+portforward.k8s.io", version="8"))
    assert a.status == 400
    assert "unsupported version" in a.message


def test_negotiate_channel_subprotocols() -> None:
    target = PATH + "?ports=8080"
    a = negotiate_channel_websocket(ws_req(None, target=target))
    assert a.data == (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: \r\n\r\n"
    ).encode()
    assert (a.protocol, a.ports) == ("", (8080,))
    # the official Python client (§12.1)
    a = negotiate_channel_websocket(ws_req("v5.channel.k8s.io,v4.channel.k8s.io", target=target))
    assert a.protocol == "v4.channel.k8s.io"
    assert b"\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n" in a.data
    a = negotiate_channel_websocket(ws_req("v4.base64.channel.k8s.io", target=target))
    assert a.protocol == "v4.base64.channel.k8s.io"
    a = negotiate_channel_websocket(ws_req("v5.channel.k8s.io", target=target))
    assert (a.status, a.data) == (403, b"HTTP/1.1 403 Forbidden\r\n\r\n")
    a = negotiate_channel_websocket(ws_req(None, target=target, version="8"))
    assert a.data == (
        b"HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"missing or bad WebSocket Version"
    )


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", 'query parameter "port" is required'),
        ("?ports=", 'query parameter "port" cannot be empty'),
        ("?ports=abc", 'unable to parse "abc" as a port: strconv.ParseUint: parsing "abc": '
                       "invalid syntax"),
        ("?ports=80,x", 'unable to parse "80,x" as a port: strconv.ParseUint: parsing "x": '
                        "invalid syntax"),
        ("?ports=70000", 'unable to parse "70000" as a port: strconv.ParseUint: parsing "70000": '
                         "value out of range"),
        ("?ports=0", 'port "0" must be > 0'),
    ],
)
def test_channel_port_query_errors(query: str, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_port_query(PATH + query)
    assert str(info.value) == error
    a = negotiate_channel_websocket(ws_req(None, target=PATH + query))
    assert a.status == 400
    assert a.data.endswith(b"\r\n\r\n" + error.encode() + b"\n")


def test_port_query_forms() -> None:
    assert parse_port_query(PATH + "?ports=80,8080&ports=80") == (80, 8080, 80)
    assert parse_port_query(PATH + "?port=443") == (443,)


def test_classify() -> None:
    assert classify_upgrade(spdy_req()) == "spdy"
    assert classify_upgrade(ws_req("SPDY/3.1+portforward.k8s.io")) == "spdy-over-websocket"
    assert classify_upgrade(ws_req("v4.channel.k8s.io")) == "websocket"
    assert classify_upgrade(ws_req(None)) == "websocket"


# ---- both roles together, memory streams and loopback TCP --------------------------




@pytest.mark.parametrize("make_pair", PAIRS)
async def test_spdy_both_roles(make_pair: Callable[[], Awaitable[tuple]]) -> None:
    c, s = await make_pair()
    server_result: list[object] = []

    async def server() -> None:
        request, trailing = await read_request(s)
        assert classify_upgrade(request) == "spdy"
        stream, protocol = await accept_spdy(request, s, trailing)
        server_result.append(protocol)
        await stream.send_all(b"from-server")
        assert await stream.receive_some() == b"from-client"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        stream, protocol = await upgrade_spdy(c, EP, PATH)
        assert protocol == "portforward.k8s.io"
        await stream.send_all(b"from-client")
        assert await stream.receive_some() == b"from-server"
    assert server_result == ["portforward.k8s.io"]
    await c.aclose()
    await s.aclose()


@pytest.mark.parametrize("make_pair", PAIRS)
async def test_tunnel_both_roles(make_pair: Callable[[], Awaitable[tuple]]) -> None:
    c, s = await make_pair()

    async def server() -> None:
        request, trailing = await read_request(s)
        assert classify_upgrade(request) == "spdy-over-websocket"
        stream, protocol = await accept_spdy_over_websocket(request, s, trailing)
        assert protocol == "portforward.k8s.io"
        await stream.send_all(b"from-server")
        assert await stream.receive_some() == b"from-client"
        assert await stream.receive_some() == b""  # client closed with 1000
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        stream, protocol = await upgrade_spdy_over_websocket(c, EP, PATH)
        assert protocol == "portforward.k8s.io"
        await stream.send_all(b"from-client")
        assert await stream.receive_some() == b"from-server"
        await stream.aclose()


@pytest.mark.parametrize("make_pair", PAIRS)
async def test_channel_both_roles(make_pair: Callable[[], Awaitable[tuple]]) -> None:
    c, s = await make_pair()

    async def server() -> None:
        request, trailing = await read_request(s)
        assert classify_upgrade(request) == "websocket"
        ws, protocol, ports = await accept_channel_websocket(request, s, trailing)
        assert (protocol, ports) == ("v4.channel.k8s.io", (80, 8080))
        await ws.send_message(b"\x00\x50\x00")
        assert await ws.receive_message() == b"\x00ping"
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        ws, protocol = await upgrade_channel_websocket(c, EP, PATH + "?ports=80,8080")
        assert protocol == "v4.channel.k8s.io"
        assert await ws.receive_message() == b"\x00\x50\x00"
        await ws.send_message(b"\x00ping")
        assert await ws.receive_message() is None
        assert ws.close_code == 1000
        await ws.aclose()


@pytest.mark.parametrize(
    ("accept", "headers"),
    [
        (accept_spdy, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                       ("X-Stream-Protocol-Version", "v9")]),
        (accept_spdy_over_websocket, [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                      ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]),
        (accept_channel_websocket, [("Connection", "Upgrade"), ("Upgrade", "websocket")]),
    ],
)
async def test_rejections_write_then_raise(accept: Callable, headers: list) -> None:
    c, s = trio.testing.memory_stream_pair()
    with pytest.raises(UpgradeRejected) as info:
        await accept(req("GET", PATH, headers), s, b"")
    assert info.value.status in (400, 403)
    await s.aclose()
    written = b""
    while data := await c.receive_some():
        written += data
    assert written == info.value.answer.data


async def test_server_keeps_bytes_sent_after_the_request() -> None:
    c, s = trio.testing.memory_stream_pair()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: Upgrade\r\n"
        "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    ).encode()
    await c.send_all(request + b"early-frame")
    parsed, trailing = await read_request(s)
    assert trailing == b"early-frame"
    stream, _ = await accept_spdy(parsed, s, trailing)
    assert await stream.receive_some() == b"early-frame"
    head, rest = await read_head(c)
    assert head == SPDY_101 and rest == b""
