"""Local listeners with client-go's exact semantics (docs/wire-protocol.md §11.1).

For each port, every listen address is tried. The port *fails* when every
``all``-mode address failed (and there was one) or when any ``any``-mode address
failed; listeners that did bind for a failed port stay open and serve, as in
client-go. A random local port (0) is chosen by the first successful bind and
reused for every later address, so ``localhost`` gives the same port on
127.0.0.1 and ::1. Error texts are Go's, word for word, so people can search them.

This is the one listen core, plain sockets and no trio: ``up`` binds through
:func:`pfcompose.up.listeners.bind_port` (which hands the sockets to trio) and
``config --check-ports`` calls :func:`bind_port_sync` and lets go at once, so both
report identical lines, and ``config/`` never imports the forwarding runtime.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from pfcompose.config.addresses import ListenAddress, canonical_ip
from pfcompose.platform.sockets import reuse_address

__all__ = [
    "BoundPort",
    "ListenError",
    "bind_port_sync",
    "go_errno_text",
    "join_host_port",
    "listen_socket",
]


class ListenError(OSError):
    """One address could not be bound; ``str()`` is Go's ``net.OpError`` text."""


def join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def go_errno_text(exc: OSError) -> str:
    """The text Go's ``syscall.Errno`` prints: strerror with a lowercase first letter."""
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text[:1].lower() + text[1:]


def listen_socket(entry: ListenAddress, port: int) -> socket.socket:
    """Bind and listen like Go's ``net.Listen(family, host:port)`` (SO_REUSEADDR, v6only)."""
    ip = str(canonical_ip(entry.address))
    family = socket.AF_INET if entry.family == "tcp4" else socket.AF_INET6
    where = f"listen {entry.family} {join_host_port(ip, port)}"
    step = "socket"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(exc.errno, f"{where}: {step}: {go_errno_text(exc)}") from None
    try:
        step = "setsockopt"
        reuse_address(sock)  # as Go does: SO_REUSEADDR, except on Windows
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "tcp6" = v6 only
        step = "bind"
        sock.bind((ip, port))
        step = "listen"
        sock.listen(socket.SOMAXCONN)  # Go listens with the kernel's somaxconn
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"{where}: {step}: {go_errno_text(exc)}") from None
    return sock


@dataclass
class BoundPort:
    """The outcome of listening on one local port across all its addresses."""

    local: int
    """The port actually bound (random ports resolved), or the requested one if none bound."""
    sockets: list[tuple[ListenAddress, socket.socket]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: bool = False

    def failure_message(self) -> str:
        """client-go's ``Unable to listen on port …`` line for a failed port."""
        return (
            f"Unable to listen on port {self.local}: Listeners failed to create with the "
            f"following errors: [{' '.join(self.errors)}]"
        )

    def close(self) -> None:
        for _, sock in self.sockets:
            sock.close()


def bind_port_sync(addresses: Sequence[ListenAddress], local: int) -> BoundPort:
    """Listen on ``local`` at every address, client-go style; never raises for bind errors."""
    result = BoundPort(local=local)
    failed = {"all": 0, "any": 0}
    succeeded = {"all": 0, "any": 0}
    for entry in addresses:
        try:
            sock = listen_socket(entry, result.local)
        except ListenError as exc:
            result.errors.append(f"unable to create listener: Error {exc.strerror}")
            failed[entry.failure_mode] += 1
            continue
        succeeded[entry.failure_mode] += 1
        result.local = sock.getsockname()[1]
        result.sockets.append((entry, sock))
    result.failed = (succeeded["all"] == 0 and failed["all"] > 0) or failed["any"] > 0
    return result
