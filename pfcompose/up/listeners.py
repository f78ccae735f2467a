"""Local listeners for ``up``: the listen core (:mod:`pfcompose.config.listen`) on trio.

The semantics (client-go's, docs/wire-protocol.md §11.1) and Go's error texts live in the
core, shared with ``config --check-ports``; this module hands the bound sockets to
trio and sets the reset-on-close a broken connection needs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence

import trio

from pfcompose.config.addresses import ListenAddress
from pfcompose.config.listen import (
    BoundPort,
    ListenError,
    bind_port_sync,
    go_errno_text,
    join_host_port,
    listen_socket,
)

__all__ = [
    "BoundPort",
    "ListenError",
    "bind_port",
    "bind_port_sync",
    "go_errno_text",
    "join_host_port",
    "listen_socket",
    "set_linger_reset",
]


async def bind_port(
    addresses: Sequence[ListenAddress], local: int
) -> tuple[BoundPort, list[tuple[ListenAddress, trio.SocketListener]]]:
    """:func:`bind_port_sync`, with each bound socket handed to trio as a listener."""
    await trio.lowlevel.checkpoint()
    bound = bind_port_sync(addresses, local)
    listeners = [
        (entry, trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        for entry, sock in bound.sockets
    ]
    return bound, listeners


def set_linger_reset(stream: trio.SocketStream) -> None:
    """Make the next close send RST: the local peer must see an error, not a clean EOF,
    when its connection broke mid-transfer (bytes were lost on the way)."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
