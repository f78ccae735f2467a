"""Local listeners with client-go's exact semantics (wire-protocol.md §11.1).

For each port, every listen address is tried. The port *fails* when every
``all``-mode address failed (and there was one) or when any ``any``-mode address
failed; listeners that did bind for a failed port stay open and serve, as in
client-go. A random local port (0) is chosen by the first successful bind and
reused for every later address, so ``localhost`` gives the same port on
127.0.0.1 and ::1. Error texts are Go's, word for word, so people can search them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from pfcompose.config import ListenAddress

_LISTEN_BACKLOG = 4096  # Go listens with the kernel's somaxconn


def join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def go_errno_text(exc: OSError) -> str:
    """The text Go's ``syscall.Errno`` prints: strerror with a lowercase first letter."""
    code = exc.errno
    text = os.strerror(code) if code is not None else (exc.strerror or str(exc))
    return text[:1].lower() + text[1:]


@dataclass
class BoundPort:
    """The outcome of listening on one local port across all its addresses."""

    local: int
    """The port actually bound (random ports resolved), or the requested one if none bound."""
    listeners: list[tuple[ListenAddress, trio.SocketListener]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: bool = False

    def failure_message(self) -> str:
        """client-go's ``Unable to listen on port …`` line for a failed port."""
        return (
            f"Unable to listen on port {self.local}: Listeners failed to create with the "
            f"following errors: [{' '.join(self.errors)}]"
        )


async def _listen_one(entry: ListenAddress, port: int) -> trio.SocketListener:
    family = socket.AF_INET if entry.family == "tcp4" else socket.AF_INET6
    stage = "socket"
    sock = None
    try:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        stage = "setsockopt"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # Go does the same
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "tcp6" means v6 only
        stage = "bind"
        await sock.bind((entry.address, port))
        stage = "listen"
        sock.listen(_LISTEN_BACKLOG)
    except OSError as exc:
        if sock is not None:
            sock.close()
        where = join_host_port(entry.address, port)
        raise ListenError(f"listen {entry.family} {where}: {stage}: {go_errno_text(exc)}") from exc
    return trio.SocketListener(sock)


class ListenError(Exception):
    """One address could not be bound; the text is Go's ``net.OpError`` wording."""


async def bind_port(addresses: Sequence[ListenAddress], local: int) -> BoundPort:
    """Listen on ``local`` at every address, client-go style; never raises for bind errors."""
    result = BoundPort(local=local)
    all_failed = all_total = any_failed = 0
    for entry in addresses:
        try:
            listener = await _listen_one(entry, result.local)
        except ListenError as exc:
            result.errors.append(f"unable to create listener: Error {exc}")
            if entry.failure_mode == "all":
                all_failed += 1
            else:
                any_failed += 1
        else:
            if result.local == 0:
                result.local = listener.socket.getsockname()[1]
            result.listeners.append((entry, listener))
        if entry.failure_mode == "all":
            all_total += 1
    result.failed = (all_total > 0 and all_failed == all_total) or any_failed > 0
    return result


def set_linger_reset(stream: trio.SocketStream) -> None:
    """Make the next close send RST: the local peer must see an error, not a clean EOF,
    when its connection broke mid-transfer (bytes were lost on the way)."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
