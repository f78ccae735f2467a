"""Server half of the upgrade handshakes: write the answer :mod:`.handshake` decided (trio).

``accept_*`` write the answer and return the upgraded stream, or raise
:class:`~.handshake.UpgradeRejected` after writing an error answer (then close the
transport: the answer was written behind h11's back).
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import trio

from .handshake import (
    CHANNEL_PROTOCOLS,
    PORT_FORWARD_PROTOCOL,
    TUNNEL_PREFIX,
    Answer,
    UpgradeRejected,
    negotiate_channel_websocket,
    negotiate_spdy,
    negotiate_spdy_over_websocket,
)
from .prefixed import with_prefix
from .websocket import WebSocketByteStream, WebSocketConnection


async def _write(transport: trio.abc.Stream, answer: Answer) -> None:
    await transport.send_all(answer.data)
    if not answer.accepted:
        raise UpgradeRejected(answer)


async def accept_spdy(
    request: h11.Request,
    transport: trio.abc.Stream,
    trailing_data: bytes = b"",
    *,
    protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,),
) -> tuple[trio.abc.Stream, str]:
    """Answer a SPDY upgrade; return (stream for the SPDY server session, protocol).

    ``trailing_data``: ``h11.Connection.trailing_data[0]`` — bytes the client sent
    after its request (a client may send its first SYN_STREAM right away).
    """
    answer = negotiate_spdy(request, protocols)
    await _write(transport, answer)
    assert answer.protocol is not None
    return with_prefix(transport, trailing_data), answer.protocol


async def accept_spdy_over_websocket(
    request: h11.Request,
    transport: trio.abc.Stream,
    trailing_data: bytes = b"",
    *,
    protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,),
) -> tuple[WebSocketByteStream, str]:
    """Answer a tunnelled-SPDY WebSocket; return (byte stream, protocol without prefix)."""
    answer = negotiate_spdy_over_websocket(request, protocols)
    await _write(transport, answer)
    assert answer.protocol is not None
    ws = WebSocketConnection(
        transport, "server", subprotocol=answer.protocol, initial_data=trailing_data
    )
    return WebSocketByteStream(ws), answer.protocol[len(TUNNEL_PREFIX) :]


async def accept_channel_websocket(
    request: h11.Request,
    transport: trio.abc.Stream,
    trailing_data: bytes = b"",
    *,
    supported: Sequence[str] = CHANNEL_PROTOCOLS,
) -> tuple[WebSocketConnection, str, tuple[int, ...]]:
    """Answer a channel-protocol WebSocket; return (connection, subprotocol, ports).

    Hand the result to :meth:`pfcompose.wire.channel.ChannelServer.open`.
    """
    answer = negotiate_channel_websocket(request, supported)
    await _write(transport, answer)
    assert answer.protocol is not None
    ws = WebSocketConnection(
        transport, "server", subprotocol=answer.protocol, initial_data=trailing_data
    )
    return ws, answer.protocol, answer.ports
