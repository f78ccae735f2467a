"""Client transport choice: connect, upgrade, and fall back the way kubectl does (§4.1).

``auto`` tries the WebSocket tunnel (B) first and plain SPDY (A) only when B's
handshake failed as an *upgrade failure* (any non-101, bad WebSocket headers,
wrong subprotocol). Connection, TLS and protocol errors do not fall back: a
server that is down or lies about HTTP gets one attempt, as with kubectl.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

import trio

from .channel import ChannelClient
from .endpoint import Endpoint, open_transport
from .errors import UpgradeError
from .upgrade import (
    CHANNEL_BINARY,
    upgrade_channel_websocket,
    upgrade_spdy,
    upgrade_spdy_over_websocket,
)

SpdyTransport = Literal["auto", "spdy", "spdy-over-websocket"]
T = TypeVar("T")


async def _on_new_transport(
    endpoint: Endpoint, upgrade: Callable[[trio.abc.Stream], Awaitable[T]]
) -> T:
    """Open a connection and run ``upgrade`` on it; close it if that fails."""
    transport = await open_transport(endpoint)
    try:
        return await upgrade(transport)
    except BaseException:
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
    if transport in ("auto", "spdy-over-websocket"):
        try:
            tunnel, _ = await _on_new_transport(
                endpoint, lambda t: upgrade_spdy_over_websocket(t, endpoint, path)
            )
        except UpgradeError as exc:
            if transport != "auto" or not exc.upgrade_failure:
                raise
        else:
            return tunnel, "spdy-over-websocket"
    stream, _ = await _on_new_transport(endpoint, lambda t: upgrade_spdy(t, endpoint, path))
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
