"""``config --check-ports``: bind every listener ``up`` would bind, now, and let go.

Uses client-go's rules (wire-protocol.md §11.1): a port fails when every ``all``-mode
listener failed or any ``any``-mode listener failed; local port 0 takes the port the
first successful listener got and reuses it on the other addresses. Failures are
worded as Go words them, so the line matches what ``kubectl port-forward`` prints.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack

from pfcompose.config.addresses import ListenAddress, canonical_ip
from pfcompose.config.plan import Plan
from pfcompose.config.problems import Problem, format_path

__all__ = ["ListenError", "check_ports", "listen_socket"]


class ListenError(OSError):
    """A listener could not be created; ``str()`` is Go's ``net.OpError`` text."""


def _go_errno(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(entry: ListenAddress, port: int) -> socket.socket:
    """Bind and listen like Go's ``net.Listen(family, host:port)`` (SO_REUSEADDR, v6only)."""
    ip = str(canonical_ip(entry.address))
    family = socket.AF_INET if entry.family == "tcp4" else socket.AF_INET6
    where = f"listen {entry.family} {join_host_port(ip, port)}"
    step = "socket"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(exc.errno, f"{where}: {step}: {_go_errno(exc)}") from None
    try:
        step = "setsockopt"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        step = "bind"
        sock.bind((ip, port))
        step = "listen"
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"{where}: {step}: {_go_errno(exc)}") from None
    return sock


def check_ports(plan: Plan) -> list[Problem]:
    """One problem per port that ``up`` would fail to listen on; nothing stays bound."""
    problems: list[Problem] = []
    with ExitStack() as held:
        for spec in plan.forwards.values():
            for index, port in enumerate(spec.ports):
                local = port.local
                errors: list[str] = []
                failed = {"all": 0, "any": 0}
                succeeded = {"all": 0, "any": 0}
                for entry in spec.listen:
                    try:
                        sock = held.enter_context(listen_socket(entry, local))
                    except ListenError as exc:
                        errors.append(f"unable to create listener: Error {exc.strerror}")
                        failed[entry.failure_mode] += 1
                        continue
                    succeeded[entry.failure_mode] += 1
                    local = sock.getsockname()[1]
                if (succeeded["all"] == 0 and failed["all"] > 0) or failed["any"] > 0:
                    problems.append(Problem(
                        None, None, None, format_path(("forwards", spec.name, "ports", index)),
                        f"Unable to listen on port {local}: Listeners failed to create with "
                        f"the following errors: [{' '.join(errors)}]",
                    ))  # fmt: skip
    return problems
