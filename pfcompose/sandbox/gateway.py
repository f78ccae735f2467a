"""Gateways the sandbox can put in front of its API server (issue 12 §2).

Rancher-, Teleport- or capsule-style gateways pass some upgrades and not others,
or drop connections that look idle. :class:`Gateway` is a reverse proxy on its own
port (the kubeconfig's ``server`` then points at it) that forwards each connection
to the API server after looking at its first request:

* ``websocket-only``: an upgrade to anything but WebSocket (SPDY/3.1) is refused
  with ``403 Forbidden`` before it reaches the API server; WebSocket passes.
* ``idle=N``: any connection with no byte either way for N seconds is cut.

Counters (:class:`GatewayCounters`) say what it passed, refused and cut. With a TLS
sandbox the gateway speaks TLS on both sides with the sandbox's certificates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from pfcompose.sandbox.tls import Pki
from pfcompose.wire.sockio import tune_socket

__all__ = ["Gateway", "GatewayCounters", "parse_gateway"]

MAX_HEAD = 64 * 1024
COPY_SIZE = 256 * 1024


def parse_gateway(text: str) -> tuple[str, float]:
    """``websocket-only`` or ``idle=SECONDS`` → (mode, seconds); ValueError otherwise."""
    if text == "websocket-only":
        return text, 0.0
    name, _, value = text.partition("=")
    if name == "idle":
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if math.isfinite(seconds) and seconds > 0:
            return "idle", seconds
    raise ValueError(f"gateway must be 'websocket-only' or 'idle=SECONDS', not {text!r}")


@dataclass
class GatewayCounters:
    connections: int = 0
    refused: int = 0
    """Upgrades refused (websocket-only: SPDY)."""
    idle_cuts: int = 0
    """Connections cut after the idle time."""
    upgrades: dict[str, int] = field(default_factory=dict)
    """Upgrades passed, by ``Upgrade`` value."""


class Gateway:
    """A gateway in front of ``upstream`` (host, port). Start it with :meth:`start`."""

    def __init__(
        self,
        mode: str,
        upstream: tuple[str, int],
        *,
        idle: float = 0.0,
        host: str = "127.0.0.1",
        pki: Pki | None = None,
    ) -> None:
        self.mode = mode
        self.idle = idle
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.pki = pki
        self.counters = GatewayCounters()
        self.changed = trio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.pki else 'http'}://{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "mode": self.mode, "idle": self.idle, **asdict(self.counters)}

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = int(listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._connection, listeners)

    async def _connection(self, tcp: trio.SocketStream) -> None:
        tune_socket(tcp)
        client: trio.abc.Stream = tcp
        server: trio.abc.Stream | None = None
        try:
            if self.pki is not None:
                tls = trio.SSLStream(
                    tcp,
                    self.pki.server_context(require_client_cert=False),
                    server_side=True,
                    https_compatible=True,
                )
                with trio.fail_after(10):
                    await tls.do_handshake()
                client = tls
            self.counters.connections += 1
            head = bytearray()
            while b"\r\n\r\n" not in head:
                data = await client.receive_some(65536)
                if not data or len(head) > MAX_HEAD:
                    return
                head += data
            upgrade = _upgrade_of(bytes(head))
            if upgrade is not None and upgrade != "websocket" and self.mode == "websocket-only":
                self.counters.refused += 1
                self._changed()
                body = b"this gateway passes WebSocket upgrades only\n"
                await client.send_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close"
                    b"\r\n\r\n" + body
                )
                return
            if upgrade is not None:
                self.counters.upgrades[upgrade] = self.counters.upgrades.get(upgrade, 0) + 1
                self._changed()
            up_tcp = await trio.open_tcp_stream(*self.upstream)
            tune_socket(up_tcp)
            server = up_tcp
            if self.pki is not None:
                ctx = self.pki.client_context(with_client_cert=True)
                up_tls = trio.SSLStream(
                    up_tcp, ctx, server_hostname=self.upstream[0], https_compatible=True
                )
                await up_tls.do_handshake()
                server = up_tls
            await server.send_all(bytes(head))
            await self._splice(client, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        finally:
            if server is not None:
                await trio.aclose_forcefully(server)
            await trio.aclose_forcefully(client)

    async def _splice(self, a: trio.abc.Stream, b: trio.abc.Stream) -> None:
        """Copy both ways; with ``idle``, cut both when nothing moved for that long."""
        last = [trio.current_time()]
        running = [2]

        async def copy(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            try:
                while data := await src.receive_some(COPY_SIZE):
                    last[0] = trio.current_time()
                    await dst.send_all(data)
                if isinstance(dst, trio.abc.HalfCloseableStream):
                    await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
            running[0] -= 1
            if not running[0]:
                nursery.cancel_scope.cancel()  # both ways done: stop the watchdog too

        async def watchdog() -> None:
            while True:
                deadline = last[0] + self.idle
                if trio.current_time() >= deadline:
                    self.counters.idle_cuts += 1
                    self._changed()
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep_until(deadline)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy, a, b)
            nursery.start_soon(copy, b, a)
            if self.mode == "idle":
                nursery.start_soon(watchdog)


def _upgrade_of(head: bytes) -> str | None:
    """The ``Upgrade`` value (lower case) of a request head, if it asks for one."""
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"upgrade:"):
            return line.split(b":", 1)[1].strip().decode("latin-1").lower()
    return None
