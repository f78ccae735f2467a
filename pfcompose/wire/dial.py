"""Client transport choice: connect, upgrade, and fall back the way kubectl does (§4.1).

``auto`` tries the WebSocket tunnel (B) first and plain SPDY (A) only when B's
handshake failed as an *upgrade failure* (any non-101, bad WebSocket headers,
wrong subprotocol) or the proxy broke B's tunnel — client-go's fallback dialer:
``IsUpgradeFailure(err) || IsHTTPSProxyError(err)``. Connection, TLS and protocol
errors do not fall back: a server that is down or lies about HTTP gets one
attempt, as with kubectl.

Unlike kubectl (one dial per run), pfcompose dials again on every reconnect, so a
fallback that worked is remembered for that endpoint (server and proxy) for the
rest of the process: later ``auto`` dials go straight to SPDY, and
:func:`fallback_reason` tells ``ps``/events why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

import trio

from .channel import ChannelClient
from .endpoint import Endpoint, open_transport
from .errors import UpgradeError
from .handshake import CHANNEL_BINARY
from .proxy import ProxyError
from .upgrade_client import (
    upgrade_channel_websocket,
    upgrade_spdy,
    upgrade_spdy_over_websocket,
)

SpdyTransport = Literal["auto", "spdy", "spdy-over-websocket"]
T = TypeVar("T")

_learned: dict[tuple[str, int, str | None], str] = {}
"""Endpoints where the tunnel failed and SPDY worked: why the tunnel failed."""


def _endpoint_key(endpoint: Endpoint) -> tuple[str, int, str | None]:
    return (endpoint.host, endpoint.port, endpoint.proxy.url if endpoint.proxy else None)


def fallback_reason(endpoint: Endpoint) -> str | None:
    """Why ``auto`` uses SPDY for ``endpoint`` (one line), or None if it does not."""
    return _learned.get(_endpoint_key(endpoint))


def forget_learned() -> None:
    """Forget every remembered fallback (tests; a fresh run starts empty anyway)."""
    _learned.clear()


def _why(exc: UpgradeError | ProxyError) -> str:
    """One line: why the tunnel failed. A refusal that came back through a proxy names
    the proxy (redacted): an inspecting proxy that strips ``Upgrade`` makes the server
    answer 400, and that line is all the user sees of it. A :class:`ProxyError` names
    the proxy already."""
    said = (exc.message if isinstance(exc, UpgradeError) else str(exc)).strip()
    text = said.splitlines()[0] if said else type(exc).__name__
    if not isinstance(exc, UpgradeError):
        return f"websocket tunnel failed ({text})"
    if exc.status is not None and str(exc.status) not in text:
        text = f"{exc.status}: {text}"
    via = f" through proxy {exc.proxy}" if exc.proxy is not None else ""
    return f"websocket tunnel{via} failed ({text})"


async def _on_new_transport(
    endpoint: Endpoint, upgrade: Callable[[trio.abc.Stream], Awaitable[T]]
) -> T:
    """Open a connection and run ``upgrade`` on it; close it if that fails."""
    transport = await open_transport(endpoint)
    try:
        return await upgrade(transport)
    except BaseException as exc:
        if isinstance(exc, UpgradeError) and endpoint.proxy is not None:
            exc.proxy = endpoint.proxy.url  # the answer came back through it
        await trio.aclose_forcefully(transport)
        raise


async def dial_spdy(
    endpoint: Endpoint, path: str, transport: SpdyTransport = "auto"
) -> tuple[trio.abc.Stream, str]:
    """Return a stream ready for a SPDY client session and the transport used.

    The name is ``"spdy-over-websocket"`` or ``"spdy"``. Raises ``UpgradeError``
    (the last attempt's), ``OSError`` / ``trio.BrokenResourceError`` / ``ssl.SSLError``
    for connection problems, ``ProtocolError`` for a peer that does not speak HTTP.
    """
    key = _endpoint_key(endpoint)
    reason: str | None = None
    if transport == "spdy-over-websocket" or (transport == "auto" and key not in _learned):
        try:
            tunnel, _ = await _on_new_transport(
                endpoint, lambda t: upgrade_spdy_over_websocket(t, endpoint, path)
            )
        except (UpgradeError, ProxyError) as exc:
            if transport != "auto" or (isinstance(exc, UpgradeError) and not exc.upgrade_failure):
                raise
            reason = _why(exc)
        else:
            return tunnel, "spdy-over-websocket"
    stream, _ = await _on_new_transport(endpoint, lambda t: upgrade_spdy(t, endpoint, path))
    if reason is not None:
        _learned[key] = reason
    return stream, "spdy"


dial_spdy_session = dial_spdy
"""The name docs/architecture.md gives it."""


async def dial_channel(
    endpoint: Endpoint,
    path: str,
    ports: Sequence[int],
    subprotocols: Sequence[str] = (CHANNEL_BINARY,),
) -> ChannelClient:
    """Transport C: ``GET path?ports=p1,p2`` and a :class:`ChannelClient` over it.

    Start ``client.run()`` in a nursery before using its streams.
    """
    if not ports:
        raise ValueError("at least one port is required")
    target = f"{path}{'&' if '?' in path else '?'}ports={','.join(str(p) for p in ports)}"
    ws, protocol = await _on_new_transport(
        endpoint, lambda t: upgrade_channel_websocket(t, endpoint, target, subprotocols)
    )
    return ChannelClient(ws, ports, protocol)
