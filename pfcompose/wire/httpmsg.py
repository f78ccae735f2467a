"""Sans-IO HTTP/1.1 message helpers over h11's types: requests in Go's header order,
header lookups as Go's ``Header.Get``, Kubernetes ``Status`` bodies.

No trio: the upgrade handshakes (:mod:`.handshake`) build and check their messages
with these, and :mod:`.http` moves the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11

if TYPE_CHECKING:  # the endpoint module is I/O (it connects); only its fields are read here
    from .endpoint import Endpoint

Headers = Sequence[tuple[str, str]]


def build_request(
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: Headers = (),
    *,
    content_length: int | None = None,
    endpoint_headers_last: bool = False,
) -> h11.Request:
    """A request in Go's order: Host, User-Agent, Content-Length, then the other headers.

    The endpoint's own headers (``Authorization``…) come before ``headers`` (Go's
    sorted order, as kubectl's SPDY request shows them, §3.1) or, with
    ``endpoint_headers_last``, after them (gorilla's WebSocket request, §4.2).
    """
    items: list[tuple[str, str]] = [("Host", endpoint.host_header)]
    if endpoint.user_agent:
        items.append(("User-Agent", endpoint.user_agent))
    if content_length is not None:
        items.append(("Content-Length", str(content_length)))
    if endpoint_headers_last:
        items.extend(headers)
        items.extend(endpoint.headers)
    else:
        items.extend(endpoint.headers)
        items.extend(headers)
    return h11.Request(method=method, target=target, headers=items)


def parse_status(body: bytes) -> tuple[str, str | None] | None:
    """``(message, reason)`` when ``body`` is a Kubernetes ``Status`` object, else None."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("kind") != "Status":
        return None
    message = obj.get("message")
    reason = obj.get("reason")
    return (
        message if isinstance(message, str) else "",
        reason if isinstance(reason, str) and reason else None,
    )


def header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """All values of header ``name`` (lowercase) in order, one per header line."""
    return [v.decode("latin-1") for k, v in headers if k == name]


def header_get(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    """Go's ``Header.Get``: the first value of ``name`` or ``""``."""
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return ""
