"""Client half of the upgrade handshakes: send the request, read the answer (trio).

``upgrade_spdy`` (transport A), ``upgrade_spdy_over_websocket`` (B) and
``upgrade_channel_websocket`` (C) send the request of :mod:`.handshake` on an
already connected transport, check the answer with it, and return the upgraded
stream; bytes that arrived glued to the 101 are kept. A non-101 or a bad handshake
raises :class:`~.errors.UpgradeError` (``upgrade_failure=True``: kubectl would fall
back from B to A); transport errors propagate unchanged. The caller owns and closes
the transport on failure.
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import trio

from .endpoint import Endpoint
from .handshake import (
    CHANNEL_BINARY,
    ERROR_BODY_LIMIT,
    PORT_FORWARD_PROTOCOL,
    TUNNEL_PREFIX,
    channel_request,
    check_channel_101,
    check_spdy_101,
    check_tunnel_101,
    error_from_response,
    new_key,
    spdy_request,
    tunnel_request,
)
from .http import read_body, receive_response, send_request
from .prefixed import with_prefix
from .websocket import WebSocketByteStream, WebSocketConnection


async def _client_handshake(
    transport: trio.abc.Stream, request: h11.Request
) -> tuple[h11.InformationalResponse, bytes]:
    """Send ``request``; return the 101 and the bytes read past it, or raise UpgradeError."""
    conn = h11.Connection(h11.CLIENT)
    await send_request(conn, transport, request)
    response = await receive_response(conn, transport)
    if isinstance(response, h11.Response):
        body = await read_body(conn, transport, ERROR_BODY_LIMIT)
        raise error_from_response(response.status_code, body)
    leftover, _closed = conn.trailing_data
    return response, bytes(leftover)


async def upgrade_spdy(
    transport: trio.abc.Stream,
    endpoint: Endpoint,
    path: str,
    *,
    method: str = "POST",
    protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,),
) -> tuple[trio.abc.Stream, str]:
    """Transport A: ``Upgrade: SPDY/3.1`` (§3.1); returns (stream, negotiated protocol)."""
    request = spdy_request(endpoint, path, method=method, protocols=protocols)
    response, leftover = await _client_handshake(transport, request)
    chosen = check_spdy_101(response, protocols)
    return with_prefix(transport, leftover), chosen


async def upgrade_spdy_over_websocket(
    transport: trio.abc.Stream,
    endpoint: Endpoint,
    path: str,
    *,
    protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,),
) -> tuple[WebSocketByteStream, str]:
    """Transport B: WebSocket GET offering ``SPDY/3.1+<protocol>`` (§4.2).

    Returns the tunnel as a byte stream and the negotiated protocol with the prefix
    stripped (``portforward.k8s.io``), to be checked like transport A's header.
    """
    key = new_key()
    request = tunnel_request(endpoint, path, key, protocols)
    response, leftover = await _client_handshake(transport, request)
    chosen = check_tunnel_101(response, key, protocols)
    ws = WebSocketConnection(transport, "client", subprotocol=chosen, initial_data=leftover)
    return WebSocketByteStream(ws), chosen[len(TUNNEL_PREFIX) :]


async def upgrade_channel_websocket(
    transport: trio.abc.Stream,
    endpoint: Endpoint,
    path_with_query: str,
    subprotocols: Sequence[str] = (CHANNEL_BINARY,),
) -> tuple[WebSocketConnection, str]:
    """Transport C: WebSocket GET ``…/portforward?ports=…`` offering ``subprotocols`` (§5).

    Returns the connection and the negotiated subprotocol (``""``: binary framing).
    """
    key = new_key()
    request = channel_request(endpoint, path_with_query, key, subprotocols)
    response, leftover = await _client_handshake(transport, request)
    chosen = check_channel_101(response, key, subprotocols)
    ws = WebSocketConnection(transport, "client", subprotocol=chosen, initial_data=leftover)
    return ws, chosen
