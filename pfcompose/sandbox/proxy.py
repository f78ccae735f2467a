"""Built-in proxies for the sandbox: HTTP CONNECT (plain or TLS), SOCKS5.

``pfcompose sandbox --proxy http|https|socks5`` starts one in front of the API
server and writes its URL as the kubeconfig's ``proxy-url``, so kubectl and
pfcompose both reach the cluster through it; its :class:`ProxyCounters` (admin
``GET /_sandbox/proxy``) prove that traffic went through it.

Only loopback targets are reached (names in ``aliases`` — by default
``pfcompose-sandbox.test`` — resolve to 127.0.0.1 here, which lets a test use a
name that is not loopback to the client, as ``HTTPS_PROXY`` needs); anything else
is refused (403 / SOCKS ``not allowed``). Optional credentials: Basic
``Proxy-Authorization`` (407 otherwise) or SOCKS5 user/password (RFC 1929).

Faults (:class:`ProxyFaults`, admin ``POST /_sandbox/proxy``), for the next
``times`` tunnels or for all:

* ``refuse-403`` / ``refuse-407``: refuse CONNECT (SOCKS: ``not allowed`` / auth fail);
* ``close``: close the connection in the middle of the proxy handshake;
* ``strip-upgrade`` / ``strip-websocket``: remove ``Upgrade``/``Connection`` from the
  first request inside the tunnel (all upgrades / WebSocket ones only), as an
  inspecting proxy does; only a plain-HTTP API server can be inspected.

Plain HTTP requests in absolute form (``GET http://host/path``, Go's way of sending
REST to an ``http://`` server through a proxy) are forwarded as they are.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import h11
import trio

from pfcompose.sandbox.tls import Pki
from pfcompose.wire.sockio import tune_socket

__all__ = ["FAULTS", "ProxyCounters", "ProxyFaults", "SandboxProxy"]

KINDS = ("http", "https", "socks5")
FAULTS = ("refuse-403", "refuse-407", "close", "strip-upgrade", "strip-websocket")
DEFAULT_ALIASES = {"pfcompose-sandbox.test": "127.0.0.1"}
MAX_HEAD = 64 * 1024
COPY_SIZE = 256 * 1024


@dataclass
class ProxyCounters:
    """What went through the proxy (admin ``GET /_sandbox/proxy``)."""

    tunnels: int = 0
    """CONNECT / SOCKS tunnels opened to the API server."""
    forwarded: int = 0
    """Plain absolute-form HTTP requests forwarded."""
    refused: int = 0
    """Handshakes refused (auth, fault, target not allowed)."""
    auth_failures: int = 0
    remote_dns: int = 0
    """SOCKS requests that named a host for the proxy to resolve (socks5h)."""
    stripped: int = 0
    """Requests whose Upgrade headers a strip fault removed."""
    upgrades: dict[str, int] = field(default_factory=dict)
    """Upgrade requests seen inside plain-HTTP tunnels, by ``Upgrade`` value."""


@dataclass
class ProxyFaults:
    fault: str | None = None
    times: int | None = None
    """How many more tunnels the fault applies to; None: all."""

    def take(self) -> str | None:
        """The fault for this tunnel (and count it down)."""
        if self.fault is None:
            return None
        fault = self.fault
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.fault, self.times = None, None
        return fault


class _Refused(Exception):
    pass


class _Buffered:
    """A stream plus bytes already read from it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            return False
        self.buf += data
        return True

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill():
                raise _Refused("client closed")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def head(self) -> bytes:
        """Up to and including the blank line ending an HTTP head."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD or not await self.fill():
                raise _Refused("no complete request head")
        out = bytes(self.buf[: end + 4])
        del self.buf[: end + 4]
        return out


class SandboxProxy:
    """One proxy listener. Start it with :meth:`start` in a nursery."""

    def __init__(
        self,
        kind: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        pki: Pki | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"proxy kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "https" and pki is None:
            raise ValueError("an https proxy needs the sandbox's certificates (--tls)")
        self.kind = kind
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.pki = pki
        self.aliases = dict(DEFAULT_ALIASES if aliases is None else aliases)
        self.counters = ProxyCounters()
        self.faults = ProxyFaults()
        self.tunnel_opened = trio.Event()

    # -- addresses -----------------------------------------------------------------
    def url(self, *, with_password: bool = True) -> str:
        """The proxy URL for a kubeconfig; ``with_password=False`` for printing."""
        user = ""
        if self.username is not None:
            secret = quote(self.password or "", safe="") if with_password else "xxxxx"
            user = f"{quote(self.username, safe='')}:{secret}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{user}{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url(with_password=False),
            "kind": self.kind,
            **asdict(self.counters),
            "fault": self.faults.fault,
            "times": self.faults.times,
        }

    def set_fault(self, fault: str | None, times: int | None = None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"'fault' must be one of {', '.join(FAULTS)} or null, not {fault!r}")
        self.faults = ProxyFaults(fault, times)

    # -- serving ---------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = int(listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        tune_socket(stream)
        client: trio.abc.Stream = stream
        try:
            if self.kind == "https":
                assert self.pki is not None
                ctx = self.pki.server_context(require_client_cert=False)
                tls = trio.SSLStream(stream, ctx, server_side=True, https_compatible=True)
                with trio.fail_after(10):
                    await tls.do_handshake()
                client = tls
            if self.kind == "socks5":
                await self._socks(_Buffered(client))
            else:
                await self._http(_Buffered(client))
        except (
            _Refused,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
            OSError,
            h11.ProtocolError,
        ):
            pass
        finally:
            await trio.aclose_forcefully(client)

    def _target(self, host: str) -> str:
        """The loopback address for ``host``, or _Refused: never leave this machine."""
        address = self.aliases.get(host.lower(), host)
        try:
            if ipaddress.ip_address(address).is_loopback:
                return address
        except ValueError:
            pass
        raise _Refused(f"target {host} not allowed")

    def _auth_ok(self, header: str) -> bool:
        if self.username is None:
            return True
        want = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return header.strip() == f"Basic {want}"

    # -- HTTP CONNECT / absolute form ----------------------------------------------------
    async def _http(self, client: _Buffered) -> None:
        head = await client.head()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(head)
        event = conn.next_event()
        if not isinstance(event, h11.Request):
            raise _Refused("not a request")
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        connect = event.method == b"CONNECT"
        target = event.target.decode("latin-1")
        if connect:
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
        else:
            url = urlsplit(target)
            host, port_text = url.hostname or "", str(url.port or 80)
        fault = self.faults.take()
        if fault == "close":
            self.counters.refused += 1
            return
        if not self._auth_ok(headers.get("proxy-authorization", "")) or fault == "refuse-407":
            self.counters.refused += 1
            self.counters.auth_failures += 1
            await self._answer(
                client,
                407,
                "Proxy Authentication Required",
                'Proxy-Authenticate: Basic realm="pfcompose-sandbox"\r\n',
            )
            return
        if fault == "refuse-403":
            self.counters.refused += 1
            await self._answer(client, 403, "Forbidden")
            return
        try:
            address = self._target(host)
            port = int(port_text)
            server = await trio.open_tcp_stream(address, port)
        except (_Refused, ValueError, OSError):
            self.counters.refused += 1
            await self._answer(
                client, 403 if connect else 502, "Forbidden" if connect else "Bad Gateway"
            )
            return
        tune_socket(server)
        try:
            if connect:
                await client.stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.counters.tunnels += 1
                self.tunnel_opened.set()
                self.tunnel_opened = trio.Event()
                await self._pass_first_head(client, server, fault)
            else:
                self.counters.forwarded += 1
                await server.send_all(self._rewrite(head, fault))
            if client.buf:
                await server.send_all(bytes(client.buf))
                client.buf.clear()
            await splice(client.stream, server)
        finally:
            await trio.aclose_forcefully(server)

    async def _pass_first_head(
        self, client: _Buffered, server: trio.abc.Stream, fault: str | None
    ) -> None:
        """Look at the first request in the tunnel if it is plain HTTP; strip if told."""
        while not client.buf:
            if not await client.fill():
                return
        if client.buf[:1] == b"\x16":  # a TLS ClientHello: opaque to us
            return
        head = await client.head()
        await server.send_all(self._rewrite(head, fault))

    def _rewrite(self, head: bytes, fault: str | None) -> bytes:
        lines = head.split(b"\r\n")
        upgrade = next(
            (
                line.split(b":", 1)[1].strip().decode("latin-1").lower()
                for line in lines[1:]
                if line.lower().startswith(b"upgrade:")
            ),
            None,
        )
        if upgrade is None:
            return head
        self.counters.upgrades[upgrade] = self.counters.upgrades.get(upgrade, 0) + 1
        if fault == "strip-upgrade" or (fault == "strip-websocket" and upgrade == "websocket"):
            self.counters.stripped += 1
            kept = [
                line for line in lines if not line.lower().startswith((b"upgrade:", b"connection:"))
            ]
            return b"\r\n".join(kept)
        return head

    async def _answer(self, client: _Buffered, status: int, reason: str, extra: str = "") -> None:
        body = f"{status} {reason}\n".encode()
        await client.stream.send_all(
            f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    # -- SOCKS5 (RFC 1928, RFC 1929) -----------------------------------------------------
    async def _socks(self, client: _Buffered) -> None:
        version, count = await client.exactly(2)
        if version != 5:
            raise _Refused("not SOCKS5")
        methods = await client.exactly(count)
        fault = self.faults.take()
        if fault == "close":
            self.counters.refused += 1
            return
        wanted = 0x02 if self.username is not None or fault == "refuse-407" else 0x00
        if wanted not in methods:
            self.counters.refused += 1
            self.counters.auth_failures += 1
            await client.stream.send_all(b"\x05\xff")
            return
        await client.stream.send_all(bytes([5, wanted]))
        if wanted == 0x02:
            _, ulen = await client.exactly(2)
            user = (await client.exactly(ulen)).decode("utf-8", "replace")
            (plen,) = await client.exactly(1)
            password = (await client.exactly(plen)).decode("utf-8", "replace")
            if fault == "refuse-407" or (user, password) != (self.username, self.password):
                self.counters.refused += 1
                self.counters.auth_failures += 1
                await client.stream.send_all(b"\x01\x01")
                return
            await client.stream.send_all(b"\x01\x00")
        _, cmd, _, atyp = await client.exactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await client.exactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await client.exactly(16)))
        elif atyp == 3:
            (length,) = await client.exactly(1)
            host = (await client.exactly(length)).decode("idna")
            self.counters.remote_dns += 1
        else:
            raise _Refused("bad address type")
        (port,) = struct.unpack("!H", await client.exactly(2))
        if cmd != 1:
            await client.stream.send_all(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        if fault == "refuse-403":
            self.counters.refused += 1
            await client.stream.send_all(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        try:
            server = await trio.open_tcp_stream(self._target(host), port)
        except (_Refused, OSError) as exc:
            self.counters.refused += 1
            code = 2 if isinstance(exc, _Refused) else 5
            await client.stream.send_all(bytes([5, code]) + b"\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        tune_socket(server)
        try:
            await client.stream.send_all(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00")
            self.counters.tunnels += 1
            self.tunnel_opened.set()
            self.tunnel_opened = trio.Event()
            await self._pass_first_head(client, server, fault)
            if client.buf:
                await server.send_all(bytes(client.buf))
                client.buf.clear()
            await splice(client.stream, server)
        finally:
            await trio.aclose_forcefully(server)


async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy both ways until both directions ended (half-close passed on)."""

    async def copy(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(COPY_SIZE):
                await dst.send_all(data)
            if isinstance(dst, trio.abc.HalfCloseableStream):
                await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy, a, b)
        nursery.start_soon(copy, b, a)
