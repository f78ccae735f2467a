"""Where a connection goes and how it is secured: the one thing wire/ needs from kube/.

An :class:`Endpoint` is plain data (host, port, TLS context, headers), built by
``pfcompose.kube`` from a kubeconfig and by tests from a sandbox. ``open_transport``
turns it into a connected trio stream; everything above (HTTP, upgrades, SPDY)
works on that stream and never touches sockets itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from pfcompose.wire.sockio import tune_socket

if TYPE_CHECKING:
    from .proxy import Proxy

USER_AGENT = "pfcompose"


@dataclass(frozen=True)
class Endpoint:
    """An API server address plus what a request to it must carry."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    """SNI / certificate name to check (kubeconfig ``tls-server-name``); default: ``host``."""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    """Extra request headers, e.g. ``("Authorization", "Bearer …")``. Never logged."""
    user_agent: str = USER_AGENT
    connect_timeout: float = 30.0
    proxy: Proxy | None = None
    """Reach the server through this proxy (kubeconfig ``proxy-url`` or the environment)."""

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: ``host:port``, IPv6 literals bracketed, the port
        left out when it is the scheme's default (443, 80), as Go's client does."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.ssl_context is not None else 80):
            return host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:  # headers may hold credentials: never show them
        via = f" via {self.proxy.url}" if self.proxy is not None else ""
        return f"Endpoint({self.scheme}://{self.host_header}{via})"


async def open_transport(endpoint: Endpoint) -> trio.abc.Stream:
    """Connect to ``endpoint``: TCP with TCP_NODELAY (or a tunnel through its proxy),
    then TLS when it has a context.

    Raises ``OSError`` (refused, unreachable, timed out), ``ProxyError`` (the proxy
    refused or broke the tunnel) or ``trio.BrokenResourceError`` / ``ssl.SSLError``
    for a failed TLS handshake; the caller words the message.
    """
    tcp: trio.abc.Stream
    with trio.fail_after(endpoint.connect_timeout):
        if endpoint.proxy is not None:
            from .proxy import open_tunnel

            tcp = await open_tunnel(
                endpoint.proxy, endpoint.host, endpoint.port, user_agent=endpoint.user_agent
            )
        else:
            tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            tune_socket(tcp)
    if endpoint.ssl_context is None:
        return tcp
    tls = trio.SSLStream(
        tcp,
        endpoint.ssl_context,
        server_hostname=endpoint.server_hostname or endpoint.host,
        https_compatible=True,
    )
    try:
        with trio.fail_after(endpoint.connect_timeout):
            await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls
