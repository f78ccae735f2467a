"""Reaching the API server through a proxy: HTTP CONNECT (plain or TLS to the proxy)
and SOCKS5, for every connection pfcompose opens (REST, watch, all upgrades).

client-go dials every upgrade through the proxy with CONNECT (SPDY round tripper,
gorilla's dialer) whatever the server's scheme, and so does :func:`open_tunnel`; the
TLS to the API server then runs inside the tunnel. ``https://`` proxies get TLS to
the proxy first with the cluster's own TLS settings (CA, client certificate), as
Go's transport and the SPDY round tripper do.

The CONNECT exchange is parsed with h11 (sans-IO), so a reply split over reads or
bytes glued behind it are handled. SOCKS5 (user/password auth, names resolved by
the proxy) is python-socks' trio backend, imported only when a SOCKS proxy is
used: it runs on trio's own sockets (no thread per connection) and is maintained;
its HTTP CONNECT is not used because it reads the reply with a single ``read``.

Credentials in a proxy URL never appear in a message: :func:`redact` (Go's
``url.Redacted``) is what every message, ``repr`` and log shows.
"""

from __future__ import annotations

import base64
import os
import ssl
from dataclasses import dataclass, field

import h11
import trio

from .errors import WireError
from .prefixed import with_prefix
from .proxyenv import redact, split_proxy_url
from .sockio import tune_socket

__all__ = ["Proxy", "ProxyError", "open_tunnel", "parse_proxy_url", "redact"]

MAX_REPLY_HEAD = 64 * 1024


class ProxyError(WireError):
    """The proxy refused or broke the tunnel. One line naming the proxy (redacted)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL. ``str()`` and ``repr()`` never show the password."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    """For ``https`` proxies: how to verify the proxy (the cluster's TLS settings)."""

    @property
    def url(self) -> str:
        """The proxy as a URL for messages: ``http://user:xxxxx@host:port`` (as Go's
        ``URL.Redacted``: a user without a password stays ``user@``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = f"{self.username}:xxxxx@" if self.password is not None else f"{self.username}@"
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Proxy({self.url})"

    def proxy_authorization(self) -> str | None:
        """``Proxy-Authorization`` for HTTP proxies (Basic), None without a user."""
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_proxy_url(url: str) -> Proxy:
    """A kubeconfig ``proxy-url`` (or environment value); ``ValueError`` with one line
    (the URL redacted) when it is not one pfcompose (and client-go) can use."""
    scheme, host, port, username, password = split_proxy_url(url)
    return Proxy(scheme, host, port, username, password)


def _os_reason(exc: BaseException) -> str:
    """The system's words for the first errno in the cause chain (``Connection refused``)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and isinstance(seen.errno, int):
            return os.strerror(seen.errno)
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]  # trio: one error per address tried
            continue
        seen = seen.__cause__ or seen.__context__
    return str(exc)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(proxy: Proxy, host: str, port: int, user_agent: str) -> h11.Request:
    """The CONNECT Go sends: ``CONNECT host:port``, Host, User-Agent, Proxy-Authorization."""
    target = _authority(host, port)
    headers = [("Host", target)]
    if user_agent:
        headers.append(("User-Agent", user_agent))
    auth = proxy.proxy_authorization()
    if auth is not None:
        headers.append(("Proxy-Authorization", auth))
    return h11.Request(method="CONNECT", target=target, headers=headers)


async def _http_connect(
    stream: trio.abc.Stream, proxy: Proxy, host: str, port: int, user_agent: str
) -> trio.abc.Stream:
    """CONNECT over ``stream``; the tunnel (bytes glued to the 200 kept) or ProxyError."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_REPLY_HEAD)
    await stream.send_all(conn.send(connect_request(proxy, host, port, user_agent)) or b"")
    target = _authority(host, port)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProxyError(
                f"proxy {proxy.url} answered CONNECT {target} with something not HTTP: {exc}"
            ) from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                raise ProxyError(f"proxy {proxy.url} closed the connection during CONNECT {target}")
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            break
        raise ProxyError(f"proxy {proxy.url} closed the connection during CONNECT {target}")
    if not 200 <= event.status_code < 300:
        reason = event.reason.decode("latin-1", "replace")
        raise ProxyError(
            f"proxy {proxy.url} refused CONNECT {target}: {event.status_code} {reason}".rstrip(),
            status=event.status_code,
        )
    leftover, _ = conn.trailing_data
    return with_prefix(stream, bytes(leftover)) if leftover else stream


async def _socks(proxy: Proxy, host: str, port: int) -> trio.SocketStream:
    """SOCKS5 with python-socks. The proxy resolves ``host`` for ``socks5`` and
    ``socks5h`` alike (an IP is sent as an IP), as client-go's dialer does
    (``golang.org/x/net/proxy``: kubectl sends the name whatever the scheme): behind a
    jump host the proxy's DNS is the one that knows the cluster (split horizon), and
    nothing is looked up here per dial."""
    from python_socks import ProxyError as SocksError
    from python_socks import ProxyType
    from python_socks.async_.trio.v2 import Proxy as TrioProxy

    socks = TrioProxy(
        ProxyType.SOCKS5,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        rdns=True,
    )
    try:
        connected = await socks.connect(host, port, timeout=None)
    except SocksError as exc:
        code = getattr(exc, "error_code", None)
        raise ProxyError(
            f"proxy {proxy.url} did not open a tunnel to {_authority(host, port)}: {exc}",
            status=code if isinstance(code, int) else None,
        ) from None
    except OSError as exc:  # python-socks' ProxyConnectionError is an OSError
        raise ProxyError(f"cannot reach proxy {proxy.url}: {_os_reason(exc)}") from None
    tcp = connected.trio_stream
    assert isinstance(tcp, trio.SocketStream)
    return tcp


async def open_tunnel(
    proxy: Proxy, host: str, port: int, *, user_agent: str = "pfcompose"
) -> trio.abc.Stream:
    """A stream to ``host:port`` through ``proxy``, not yet TLS to the server.

    Raises :class:`ProxyError` (refused, closed mid-handshake, unreachable); the
    caller bounds the time.
    """

    if proxy.scheme in ("socks5", "socks5h"):
        tcp = await _socks(proxy, host, port)
        tune_socket(tcp)
        return tcp
    try:
        tcp = await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyError(f"cannot reach proxy {proxy.url}: {_os_reason(exc)}") from None
    tune_socket(tcp)
    stream: trio.abc.Stream = tcp
    try:
        if proxy.scheme == "https":
            ctx = proxy.ssl_context or ssl.create_default_context()
            tls = trio.SSLStream(tcp, ctx, server_hostname=proxy.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                raise ProxyError(f"TLS to proxy {proxy.url} failed: {cause}") from None
            stream = tls
        try:
            return await _http_connect(stream, proxy, host, port, user_agent)
        except trio.BrokenResourceError:
            raise ProxyError(
                f"proxy {proxy.url} closed the connection during CONNECT {_authority(host, port)}"
            ) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
