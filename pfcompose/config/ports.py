"""Port specs, parsed exactly as client-go's ``parsePorts`` does (docs/wire-protocol.md §11.2).

One extension: the remote side may be a port *name* (``8080:http``), which kubectl
resolves against the pod or service at run time (§10.3); the name is kept as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pfcompose._util.gotext import go_quote

__all__ = ["PortMap", "PortSpecError", "parse_port", "parse_uint16"]

# IANA service name as Kubernetes validates container port names.
_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class PortSpecError(ValueError):
    """A port spec client-go would refuse; ``str()`` is client-go's exact text."""


@dataclass(frozen=True)
class PortMap:
    """``local`` 0 = a random port, chosen once and reused on every address."""

    local: int
    remote: int | str  # str = a port name, resolved at run time

    def __str__(self) -> str:
        return f"{self.local}:{self.remote}"


def parse_uint16(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 16)``, with its error text on failure.

    Digits are consumed left to right and overflow is detected as it happens, so
    ``"70000x"`` is out of range while ``"x70000"`` is a syntax error — as in Go.
    """
    prefix = f"strconv.ParseUint: parsing {go_quote(text)}: "
    if not text:
        raise PortSpecError(prefix + "invalid syntax")
    value = 0
    for ch in text:
        if not ("0" <= ch <= "9"):
            raise PortSpecError(prefix + "invalid syntax")
        value = value * 10 + ord(ch) - ord("0")
        if value > 0xFFFF:
            raise PortSpecError(prefix + "value out of range")
    return value


def parse_port(spec: str | int) -> PortMap:
    """``"5000"``, ``"8888:5000"``, ``":5000"``, ``"0:5000"``, ``8080:http`` or an int."""
    text = str(spec)
    parts = text.split(":")
    if len(parts) == 1:
        local_text = remote_text = parts[0]
    elif len(parts) == 2:
        local_text = parts[0] or "0"
        remote_text = parts[1]
    else:
        raise PortSpecError(f"invalid port format '{text}'")
    try:
        local = parse_uint16(local_text)
    except PortSpecError as exc:
        message = f"error parsing local port '{local_text}': {exc}"
        if len(parts) == 1 and _PORT_NAME.match(local_text):
            message += f' (a named port needs a local port: ":{local_text}" or "8080:{local_text}")'
        raise PortSpecError(message) from None
    remote: int | str
    if _PORT_NAME.match(remote_text):
        remote = remote_text
    else:
        try:
            remote = parse_uint16(remote_text)
        except PortSpecError as exc:
            raise PortSpecError(f"error parsing remote port '{remote_text}': {exc}") from None
        if remote == 0:
            raise PortSpecError("remote port must be > 0")
    return PortMap(local, remote)
