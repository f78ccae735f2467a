"""HTTP/1.1 on a trio stream with h11: one request, one response, no pooling.

The API server is reached the way client-go's SPDY round tripper reaches it: a
fresh connection per request (§3.1). These helpers are shared by the upgrade
handshakes and by ``kube/`` for plain JSON GETs and chunked watch responses.
h11 does the parsing; this module only moves bytes between it and the stream.
Building requests and reading headers is sans-IO, in :mod:`.httpmsg`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from pfcompose._util.lines import LineSplitter, LineTooLongError

from .endpoint import Endpoint
from .errors import ProtocolError
from .httpmsg import Headers, build_request

RECEIVE_SIZE = 65536
MAX_BODY = 64 * 1024 * 1024
"""Bound on a buffered response body: a hostile server cannot make us grow without limit."""
MAX_LINE = 16 * 1024 * 1024
"""Bound on one line of a streamed (watch) response."""


class MalformedResponse(ProtocolError):
    """h11 could not parse the peer's answer; ``detail`` is h11's own text."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"malformed HTTP response: {detail}")
        self.detail = detail


class PeerClosed(ProtocolError):
    """A strict read met end of stream before the response head or before the body's end."""

    def __init__(self, *, mid_body: bool) -> None:
        where = "mid-response" if mid_body else "before the HTTP response"
        super().__init__(f"connection closed {where}")
        self.mid_body = mid_body


class BodyTooLarge(ProtocolError):
    """A strict read of a response body went past its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit


class ResponseLineTooLong(ProtocolError):
    """A line of a streamed response exceeded its bound (the peer lost its framing)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response line longer than {limit} bytes")
        self.limit = limit


async def send_request(
    conn: h11.Connection, transport: trio.abc.Stream, request: h11.Request, body: bytes = b""
) -> None:
    """Write ``request`` (and its body) in one ``send_all``."""
    out = conn.send(request) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await transport.send_all(out)


async def next_event(
    conn: h11.Connection, transport: trio.abc.Stream, *, strict: bool = False
) -> Any:
    """The next h11 event, reading the stream as needed.

    h11's parse errors become :class:`MalformedResponse` (the peer is not speaking
    HTTP). With ``strict``, end of stream while the response head or body is still
    due is :class:`PeerClosed` even where HTTP/1.0 framing would let it end a body
    (a REST answer cut short must not decode as a shorter one). The transport's own
    errors (``BrokenResourceError``, ``OSError``) pass through for the caller to word.
    """
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise MalformedResponse(str(exc)) from None
        if event is not h11.NEED_DATA:
            return event
        data = await transport.receive_some(RECEIVE_SIZE)
        if strict and not data:
            if conn.their_state is h11.SEND_RESPONSE:
                raise PeerClosed(mid_body=False)
            if conn.their_state is h11.SEND_BODY:
                raise PeerClosed(mid_body=True)
        conn.receive_data(bytes(data))


async def receive_response(
    conn: h11.Connection, transport: trio.abc.Stream, *, strict: bool = False
) -> Any:
    """Skip interim 1xx answers other than 101; return the 101 or the final Response."""
    while True:
        event = await next_event(conn, transport, strict=strict)
        if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            continue
        if isinstance(event, h11.InformationalResponse | h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise ProtocolError("connection closed before the HTTP response")
        raise ProtocolError(f"unexpected HTTP event {type(event).__name__}")


async def read_body(
    conn: h11.Connection,
    transport: trio.abc.Stream,
    limit: int = MAX_BODY,
    *,
    strict: bool = False,
) -> bytes:
    """The rest of the current response body; longer bodies are cut at ``limit``.

    With ``strict`` a longer body is :class:`BodyTooLarge` (raised as soon as it
    passes the limit) and end of stream mid-body is :class:`PeerClosed`.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        event = await next_event(conn, transport, strict=strict)
        if isinstance(event, h11.Data):
            if strict and size + len(event.data) > limit:
                raise BodyTooLarge(limit)
            if size < limit:
                parts.append(bytes(event.data[: limit - size]))
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return b"".join(parts)
        else:
            raise ProtocolError(f"unexpected HTTP event {type(event).__name__}")


async def http_request(
    transport: trio.abc.Stream,
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: Headers = (),
    *,
    body: bytes = b"",
    limit: int = MAX_BODY,
) -> tuple[h11.Response, bytes]:
    """Send one request on ``transport`` and return the response with its whole body.

    The caller owns ``transport`` (and closes it: one connection per request).
    """
    conn = h11.Connection(h11.CLIENT)
    request = build_request(
        endpoint, method, target, headers, content_length=len(body) if body else None
    )
    await send_request(conn, transport, request, body)
    response = await receive_response(conn, transport)
    if not isinstance(response, h11.Response):
        raise ProtocolError("unexpected 101 Switching Protocols")
    return response, await read_body(conn, transport, limit)


class LineReader:
    """Async iterator over the lines (``\\n``-terminated, without it) of a response body.

    A thin loop around :class:`~pfcompose._util.lines.LineSplitter`; a line longer
    than ``max_line`` is a :class:`LineTooLongError`.
    """

    def __init__(
        self,
        conn: h11.Connection,
        transport: trio.abc.Stream,
        *,
        max_line: int = MAX_LINE,
        strict: bool = False,
        idle_timeout: float | None = None,
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._strict = strict
        self._idle = math.inf if idle_timeout is None else idle_timeout
        """Bound on the wait for each piece of the body (``trio.TooSlowError``)."""
        self._splitter = LineSplitter(max_line)
        self._lines: deque[bytes] = deque()
        self._done = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> bytes:
        if not self._lines:
            self._lines.extend(await self.read_lines())
            if not self._lines:
                raise StopAsyncIteration
        return self._lines.popleft()

    async def read_lines(self) -> list[bytes]:
        """The lines the next piece(s) of the body complete, at least one; ``[]`` at its end.

        A batch per chunk: a watch reader pays its per-call costs once per chunk, not
        per event. Do not mix with iteration (lines already taken by ``__anext__``'s
        buffer are not returned here).
        """
        while not self._done:
            if self._idle == math.inf:
                event = await next_event(self._conn, self._transport, strict=self._strict)
            else:
                with trio.fail_after(self._idle):
                    event = await next_event(self._conn, self._transport, strict=self._strict)
            if isinstance(event, h11.Data):
                try:
                    lines = self._splitter.feed(event.data)
                except LineTooLongError as exc:
                    raise ResponseLineTooLong(exc.limit) from None
                if lines:
                    return lines
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self._done = True
                rest = self._splitter.finish()
                return [rest] if rest else []
            else:
                raise ProtocolError(f"unexpected HTTP event {type(event).__name__}")
        return []


@asynccontextmanager
async def http_stream(
    transport: trio.abc.Stream,
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: Headers = (),
) -> AsyncIterator[tuple[h11.Response, LineReader]]:
    """Send a request; yield its response head and a reader of its body's lines.

    For watch responses (chunked, one JSON object per line). Check the status
    before iterating; on a non-2xx answer read the body with ``b"\\n".join``.
    """
    conn = h11.Connection(h11.CLIENT)
    await send_request(conn, transport, build_request(endpoint, method, target, headers))
    response = await receive_response(conn, transport)
    if not isinstance(response, h11.Response):
        raise ProtocolError("unexpected 101 Switching Protocols")
    yield response, LineReader(conn, transport)
