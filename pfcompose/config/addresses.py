"""Listen addresses, parsed exactly as client-go's ``parseAddresses`` (docs/wire-protocol.md §11.1).

``localhost`` means 127.0.0.1 and ::1 where failing one is fine (mode ``all``: the
port fails only if every such listener fails); an explicit IP must work (mode ``any``:
one failure fails the port). Entries are de-duplicated by their *string* and sorted
by it, so the order and the modes match kubectl's to the letter.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["AddressError", "ListenAddress", "canonical_ip", "parse_addresses", "parse_ip_sloppy"]


class AddressError(ValueError):
    """An address client-go would refuse; ``str()`` is client-go's exact text."""


@dataclass(frozen=True)
class ListenAddress:
    address: str  # as written ("127.0.0.1", "::1", "0.0.0.0")
    family: Literal["tcp4", "tcp6"]
    failure_mode: Literal["all", "any"]


_IPV4 = re.compile(r"^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)$")


def _sloppy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    match = _IPV4.match(text)
    if match is None:
        return None
    octets = [int(part) for part in match.groups()]
    if any(octet > 255 for octet in octets):
        return None
    return ipaddress.IPv4Address(".".join(str(octet) for octet in octets))


def parse_ip_sloppy(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's ``netutils.ParseIPSloppy``: IPv4 (leading zeros allowed) or IPv6, no zones."""
    if "." in text and ":" not in text:
        return _sloppy_ipv4(text)
    if ":" not in text or "%" in text or not text.isascii():
        return None
    head, dot, tail = text.rpartition(":")
    if "." in tail:  # an embedded IPv4 tail, leading zeros allowed as well
        v4 = _sloppy_ipv4(tail)
        if v4 is None:
            return None
        text = head + dot + str(v4)
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def canonical_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a listener really binds (v4-mapped IPv6 counts as IPv4, as Go's To4)."""
    ip = parse_ip_sloppy(address)
    if ip is None:
        raise AddressError(f"{address} is not a valid IP")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_addresses(addresses: Sequence[str]) -> tuple[ListenAddress, ...]:
    """Expand, de-duplicate and sort listen addresses with client-go's rules and texts."""
    parsed: dict[str, ListenAddress] = {}
    for address in addresses:
        if address == "localhost":
            parsed.setdefault("127.0.0.1", ListenAddress("127.0.0.1", "tcp4", "all"))
            parsed.setdefault("::1", ListenAddress("::1", "tcp6", "all"))
            continue
        ip = parse_ip_sloppy(address)
        if ip is None:
            raise AddressError(f"{address} is not a valid IP")
        is_v4 = isinstance(ip, ipaddress.IPv4Address) or ip.ipv4_mapped is not None
        parsed[address] = ListenAddress(address, "tcp4" if is_v4 else "tcp6", "any")
    if not parsed:
        raise AddressError("you must specify at least 1 address")
    return tuple(sorted(parsed.values(), key=lambda entry: entry.address.encode()))
