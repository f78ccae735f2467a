"""A tiny in-test HTTP/1.1 server (h11 on trio, plain or TLS) for the kube client tests."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trustme


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: dict[str, str]
    peer_cert: dict[str, Any] | None = None


class Reply:
    """What a handler uses to answer: ``start`` then any ``data`` then ``end``."""

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn

    async def start(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        await self._send(h11.Response(status_code=status, headers=headers or []))

    async def data(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def json(self, status: int, body: bytes) -> None:
        await self.start(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        await self.data(body)
        await self.end()

    async def _send(self, event: Any) -> None:
        await self._stream.send_all(self._conn.send(event) or b"")


Handler = Callable[[SeenRequest, Reply], Awaitable[None]]


@dataclass
class Server:
    port: int
    requests: list[SeenRequest] = field(default_factory=list)


async def _serve_one(stream: trio.abc.Stream, handler: Handler, server: Server, tls: bool) -> None:
    async with stream:
        peer_cert = None
        if tls:
            assert isinstance(stream, trio.SSLStream)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                return
            peer_cert = stream.getpeercert()
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return
        assert request is not None
        seen = SeenRequest(
            method=request.method.decode(),
            target=request.target.decode(),
            headers={k.decode(): v.decode() for k, v in request.headers},
            peer_cert=peer_cert,
        )
        server.requests.append(seen)
        with suppress(trio.BrokenResourceError):
            await handler(seen, Reply(stream, conn))


@asynccontextmanager
async def serve_http(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Serve ``handler`` on 127.0.0.1 (random port) until the block ends."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        server = Server(port)

        async def accept_loop() -> None:
            async with listeners[0]:
                while True:
                    tcp = await listeners[0].accept()
                    stream: trio.abc.Stream = tcp
                    if ssl_context is not None:
                        stream = trio.SSLStream(tcp, ssl_context, server_side=True)
                    nursery.start_soon(_serve_one, stream, handler, server, ssl_context is not None)

        nursery.start_soon(accept_loop)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def server_ssl_context(
    ca: trustme.CA, cert: trustme.LeafCert, *, require_client_cert: bool = False
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    if require_client_cert:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
