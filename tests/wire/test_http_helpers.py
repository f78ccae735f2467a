"""The small h11 request helpers shared with kube/."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from pfcompose._util.gotext import go_quote, go_quote_list
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.http import (
    BodyTooLarge,
    MalformedResponse,
    PeerClosed,
    http_request,
    http_stream,
    read_body,
    receive_response,
    send_request,
)
from pfcompose.wire.httpmsg import build_request, parse_status

EP = Endpoint("::1", 6443, headers=(("Authorization", "Bearer T"),), user_agent="pfcompose/t")


async def serve_once(server: trio.abc.Stream, response: bytes, seen: list[bytes]) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await server.receive_some()
    seen.append(buf)
    await server.send_all(response)
    await server.aclose()


async def test_http_request_bytes_and_body() -> None:
    c, s = trio.testing.memory_stream_pair()
    seen: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            serve_once, s,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
            b'{"a": true}', seen,
        )
        response, body = await http_request(
            c, EP, "GET", "/version?timeout=32s", [("Accept", "application/json")]
        )
    assert seen[0] == (
        b"GET /version?timeout=32s HTTP/1.1\r\nHost: [::1]:6443\r\nUser-Agent: pfcompose/t\r\n"
        b"Authorization: Bearer T\r\nAccept: application/json\r\n\r\n"
    )
    assert response.status_code == 200
    assert body == b'{"a": true}'


async def test_http_stream_lines_chunked() -> None:
    c, s = trio.testing.memory_stream_pair()
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\n{\"a\":1}\r\n"
        b"3\r\n\n{\"\r\n"
        b"6\r\nb\":2}\n\r\n"
        b"0\r\n\r\n"
    )
    seen: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, s, chunked, seen)
        async with http_stream(c, EP, "GET", "/api/v1/pods?watch=true") as (response, lines):
            assert response.status_code == 200
            got = [line async for line in lines]
    assert got == [b'{"a":1}', b'{"b":2}']


def test_parse_status_and_go_quote() -> None:
    assert parse_status(b'{"kind":"Status","message":"m","reason":"NotFound"}') == (
        "m", "NotFound")
    assert parse_status(b'{"kind":"Pod"}') is None
    assert parse_status(b"not json") is None
    assert go_quote('a"b\\c\n\x01') == '"a\\"b\\\\c\\n\\x01"'
    assert go_quote_list(["a", "b"]) == '["a" "b"]'


async def _exchange(response: bytes, *, strict: bool, limit: int = 1 << 20) -> bytes:
    """One GET against a canned answer, read with the REST client's (strict) rules."""
    c, s = trio.testing.memory_stream_pair()
    seen: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, s, response, seen)
        conn = h11.Connection(h11.CLIENT)
        await send_request(conn, c, build_request(EP, "GET", "/api"))
        try:
            await receive_response(conn, c, strict=strict)
            body = await read_body(conn, c, limit, strict=strict)
        except ProtocolError as exc:
            failure = exc
        else:
            return body
    raise failure


async def test_strict_reads_refuse_short_and_long_bodies() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    http10 = b"HTTP/1.0 200 OK\r\n\r\nabc"  # body ends at EOF
    assert await _exchange(http10, strict=False) == b"abc"
    with pytest.raises(PeerClosed, match="connection closed mid-response") as closed:
        await _exchange(http10, strict=True)
    assert closed.value.mid_body
    with pytest.raises(PeerClosed, match="connection closed before the HTTP response"):
        await _exchange(b"", strict=True)
    assert await _exchange(head + b"0123456789", strict=False, limit=4) == b"0123"
    with pytest.raises(BodyTooLarge, match="larger than 4 bytes"):
        await _exchange(head + b"0123456789", strict=True, limit=4)
    with pytest.raises(MalformedResponse) as bad:
        await _exchange(b"SSH-2.0-OpenSSH\r\n\r\n", strict=True)
    assert str(bad.value) == f"malformed HTTP response: {bad.value.detail}"
