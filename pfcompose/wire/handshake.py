"""Sans-IO HTTP/1.1 upgrade handshakes of the three port-forward transports, both roles.

No trio and no sockets: h11's types in, h11's types or exact bytes out. The drivers
are :mod:`.upgrade_client` (send the request, read the answer) and
:mod:`.upgrade_server` (write the answer).

Client role (docs/wire-protocol.md §3.1, §3.3, §4.2, §5): ``*_request`` build the
request as kubectl / gorilla write it; ``check_*_101`` check a 101 as client-go and
gorilla do and return the negotiated protocol; :func:`error_from_response` reads a
non-101 as client-go does (§3.4). Failures are :class:`UpgradeError`
(``upgrade_failure=True``: kubectl would fall back from B to A).

Server role (the sandbox's API server + kubelet): the request has already been
parsed with h11. ``negotiate_*`` decide and render the exact answer Go would write
(status, headers, body texts) as an :class:`Answer`; :func:`classify_upgrade` says
which transport a request asks for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlsplit

import h11

from pfcompose._util.gotext import go_quote, go_quote_list

from .errors import UpgradeError, WireError
from .httpmsg import build_request, header_get, header_values, parse_status

if TYPE_CHECKING:  # only its fields are read here; the module itself connects
    from .endpoint import Endpoint

SPDY_31 = "SPDY/3.1"
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PREFIX = "SPDY/3.1+"
TUNNEL_SUFFIX = ".k8s.io"
CHANNEL_BINARY = "v4.channel.k8s.io"
CHANNEL_BASE64 = "v4.base64.channel.k8s.io"
CHANNEL_PROTOCOLS = ("", CHANNEL_BINARY, CHANNEL_BASE64)
"""What the kubelet accepts for port-forward over WebSocket, in its order (§5)."""
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ERROR_BODY_LIMIT = 64 * 1024

RawHeaders = Sequence[tuple[bytes, bytes]]


# ---------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()).decode()


def _tokens(headers: RawHeaders, name: bytes) -> list[str]:
    """Comma-separated tokens over every line of ``name``, trimmed, lowercased."""
    return [t.strip().lower() for v in header_values(headers, name) for t in v.split(",")]


def _has_token(headers: RawHeaders, name: bytes, token: str) -> bool:
    """gorilla's ``tokenListContainsValue``."""
    return token.lower() in _tokens(headers, name)


def _contains(headers: RawHeaders, name: bytes, text: str) -> bool:
    """apimachinery's test: ``strings.Contains(lower(Header.Get(name)), text)``."""
    return text in header_get(headers, name).lower()


def error_from_response(status: int, body: bytes) -> UpgradeError:
    """client-go's reading of a non-101 answer (§3.4)."""
    parsed = parse_status(body)
    if parsed is not None:
        message, reason = parsed
        return UpgradeError(message, status=status, reason=reason)
    text = body.decode("utf-8", "replace").strip()
    return UpgradeError(f"unable to upgrade connection: {text}", status=status)


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key`` (16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16)).decode()


def check_websocket_101(response: h11.InformationalResponse, key: str) -> None:
    """gorilla's client checks of a 101 (anything wrong is ``ErrBadHandshake``)."""
    headers = response.headers
    if (
        not _has_token(headers, b"upgrade", "websocket")
        or not _has_token(headers, b"connection", "upgrade")
        or header_get(headers, b"sec-websocket-accept") != accept_key(key)
    ):
        raise UpgradeError("websocket: bad handshake", status=101)


def websocket_headers(key: str, protocols: Sequence[str], sep: str) -> list[tuple[str, str]]:
    headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", sep.join(protocols)))
    return headers


# ---------------------------------------------------------------------------
# client role
# ---------------------------------------------------------------------------


def spdy_request(
    endpoint: Endpoint,
    path: str,
    *,
    method: str = "POST",
    protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,),
) -> h11.Request:
    """Transport A's request: ``Upgrade: SPDY/3.1`` offering ``protocols`` (§3.1)."""
    headers = [("Connection", "Upgrade"), ("Upgrade", SPDY_31)]
    headers += [("X-Stream-Protocol-Version", p) for p in protocols]
    length = None if method.upper() in ("GET", "HEAD") else 0
    return build_request(endpoint, method, path, headers, content_length=length)


def check_spdy_101(response: h11.InformationalResponse, protocols: Sequence[str]) -> str:
    """The protocol a transport-A 101 chose, checked as client-go does (§3.1, §13.4).

    The 101 must carry ``Connection: upgrade``, ``Upgrade: spdy/3.1`` and echo one of
    ``protocols`` in ``X-Stream-Protocol-Version``.
    """
    if not _contains(response.headers, b"connection", "upgrade") or not _contains(
        response.headers, b"upgrade", SPDY_31.lower()
    ):
        raise UpgradeError(
            "unable to upgrade connection: missing upgrade headers in response", status=101
        )
    chosen = header_get(response.headers, b"x-stream-protocol-version")
    if chosen not in protocols:
        supported = go_quote(protocols[0]) if len(protocols) == 1 else go_quote_list(protocols)
        raise UpgradeError(
            f"unable to negotiate protocol: client supports {supported}, "
            f"server returned {go_quote(chosen)}",
            status=101,
            upgrade_failure=False,
        )
    return chosen


def tunnel_request(
    endpoint: Endpoint, path: str, key: str, protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,)
) -> h11.Request:
    """Transport B's request: a WebSocket GET offering ``SPDY/3.1+<protocol>`` (§4.2)."""
    offered = [TUNNEL_PREFIX + p for p in protocols]
    return build_request(
        endpoint, "GET", path, websocket_headers(key, offered, ", "), endpoint_headers_last=True
    )


def check_tunnel_101(
    response: h11.InformationalResponse, key: str, protocols: Sequence[str]
) -> str:
    """The subprotocol (with its ``SPDY/3.1+`` prefix) a transport-B 101 chose, checked."""
    check_websocket_101(response, key)
    offered = [TUNNEL_PREFIX + p for p in protocols]
    chosen = header_get(response.headers, b"sec-websocket-protocol")
    if chosen not in offered:
        raise UpgradeError(
            f"invalid protocol, expected one of {go_quote_list(offered)}, got {go_quote(chosen)}",
            status=101,
        )
    return chosen


def channel_request(
    endpoint: Endpoint, path_with_query: str, key: str, subprotocols: Sequence[str]
) -> h11.Request:
    """Transport C's request: WebSocket GET ``…/portforward?ports=…`` (§5)."""
    return build_request(
        endpoint,
        "GET",
        path_with_query,
        websocket_headers(key, subprotocols, ","),
        endpoint_headers_last=True,
    )


def check_channel_101(
    response: h11.InformationalResponse, key: str, subprotocols: Sequence[str]
) -> str:
    """The subprotocol a transport-C 101 chose, checked; an empty
    ``Sec-WebSocket-Protocol:`` (the kubelet's ``""`` choice) means binary framing."""
    check_websocket_101(response, key)
    chosen = header_get(response.headers, b"sec-websocket-protocol").strip()
    if chosen and chosen not in subprotocols:
        raise UpgradeError(
            f"invalid protocol, expected one of {go_quote_list(subprotocols)}, "
            f"got {go_quote(chosen)}",
            status=101,
        )
    return chosen


# ---------------------------------------------------------------------------
# server role
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a Go server writes for an upgrade request: the bytes and what they mean."""

    status: int
    data: bytes
    """The whole answer (status line, headers, body) ready to write to the socket."""
    protocol: str | None = None
    """The negotiated protocol (101 only)."""
    message: str = ""
    """The Go error text behind a non-101 (logged by Go; in the body for ``http.Error``)."""
    ports: tuple[int, ...] = field(default=())
    """Transport C: the ports requested, in order, duplicates kept."""

    @property
    def accepted(self) -> bool:
        return self.status == 101


class UpgradeRejected(WireError):
    """Server role: the upgrade was refused and the error answer has been written."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message or f"upgrade refused with status {answer.status}")
        self.answer = answer
        self.status = answer.status


def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"


def _render(status: int, headers: Sequence[tuple[str, str]], body: bytes | None = None) -> bytes:
    """Go ``net/http`` style: handler headers sorted by name, then Content-Length.

    Error answers also say ``Connection: close`` because the caller drops the
    connection after them (Go would keep it alive; clients close it anyway).
    """
    out = [_status_line(status)]
    out += [f"{k}: {v}\r\n" for k, v in sorted(headers, key=lambda kv: kv[0])]
    if body is not None:
        out.append(f"Content-Length: {len(body)}\r\n")
        out.append("Connection: close\r\n")
    out.append("\r\n")
    return "".join(out).encode("latin-1") + (body or b"")


def _http_error(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """Go's ``http.Error(w, message, status)``: text/plain, nosniff, message + newline."""
    all_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        *headers,
    ]
    return Answer(status, _render(status, all_headers, (message + "\n").encode()), message=message)


def _canonical(name: str) -> str:
    """Go's ``CanonicalHeaderKey`` for ordinary names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def go_header_dump(headers: RawHeaders) -> str:
    """``fmt.Sprintf("%#v", req.Header)`` of a Go server request (Host is not in it)."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        key = _canonical(name.decode("latin-1"))
        if key == "Host":
            continue
        grouped.setdefault(key, []).append(value.decode("latin-1"))
    items = (
        f"{go_quote(k)}:[]string{{{', '.join(go_quote(v) for v in vs)}}}"
        for k, vs in sorted(grouped.items())
    )
    return "http.Header{" + ", ".join(items) + "}"


def _client_stream_protocols(headers: RawHeaders) -> list[str]:
    """Every ``X-Stream-Protocol-Version`` value: all lines, split on commas, trimmed."""
    return [
        p.strip()
        for v in header_values(headers, b"x-stream-protocol-version")
        for p in v.split(",")
        if p.strip()
    ]


def _negotiate_stream_protocol(
    client: Sequence[str], server: Sequence[str]
) -> tuple[str | None, Answer | None]:
    """apimachinery ``httpstream.Handshake`` (§3.2 steps 1–2)."""
    if not client:
        # Go returns the error without writing anything: net/http then sends an
        # empty 200 (§13.15).
        message = "unable to upgrade: X-Stream-Protocol-Version is required"
        return None, Answer(200, _render(200, [], b""), message=message)
    for p in client:
        if p in server:
            return p, None
    message = (
        f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(client)}], "
        f"server accepts [{' '.join(server)}]"
    )
    accepted = [("X-Accepted-Stream-Protocol-Versions", p) for p in server]
    return None, _http_error(403, message, accepted)


def negotiate_spdy(
    request: h11.Request, protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,)
) -> Answer:
    """The kubelet's answer to a SPDY upgrade request (§3.2), sans-IO."""
    headers = request.headers
    chosen, refusal = _negotiate_stream_protocol(_client_stream_protocols(headers), protocols)
    if refusal is not None:
        return refusal
    assert chosen is not None
    if not _contains(headers, b"connection", "upgrade") or not _contains(
        headers, b"upgrade", SPDY_31.lower()
    ):
        message = (
            f"unable to upgrade: missing upgrade headers in request: {go_header_dump(headers)}"
        )
        return _http_error(400, message, [("X-Stream-Protocol-Version", chosen)])
    response = _render(
        101,
        [("Connection", "Upgrade"), ("Upgrade", SPDY_31), ("X-Stream-Protocol-Version", chosen)],
    )
    return Answer(101, response, protocol=chosen)


def _gorilla_error(status: int, message: str) -> Answer:
    """gorilla ``Upgrader.returnError``: the status text as body, reason only in logs."""
    answer = _http_error(status, http.HTTPStatus(status).phrase, [("Sec-Websocket-Version", "13")])
    return Answer(status, answer.data, message=message)


def _valid_challenge_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def negotiate_spdy_over_websocket(
    request: h11.Request, protocols: Sequence[str] = (PORT_FORWARD_PROTOCOL,)
) -> Answer:
    """The API server's tunnelling handler plus the kubelet behind it (§4.4), sans-IO.

    Order as in Go: tunnelling protocols present (400), the kubelet's protocol
    negotiation (its 403 replayed), then gorilla's WebSocket checks, then the 101
    offering ``SPDY/3.1+<chosen>``.
    """
    headers = request.headers
    offered = [p.strip() for p in header_get(headers, b"sec-websocket-protocol").split(",")]
    spdy = [
        p[len(TUNNEL_PREFIX) :]
        for p in offered
        if p.startswith(TUNNEL_PREFIX) and p.endswith(TUNNEL_SUFFIX)
    ]
    if not spdy:
        return _http_error(400, "unable to upgrade: no tunneling spdy protocols provided")
    chosen, refusal = _negotiate_stream_protocol(spdy, protocols)
    if refusal is not None:
        return refusal
    assert chosen is not None
    bad = "websocket: the client is not using the websocket protocol: "
    if not _has_token(headers, b"connection", "upgrade"):
        return _gorilla_error(400, bad + "'upgrade' token not found in 'Connection' header")
    if not _has_token(headers, b"upgrade", "websocket"):
        return _gorilla_error(400, bad + "'websocket' token not found in 'Upgrade' header")
    if request.method != b"GET":
        return _gorilla_error(405, bad + "request method is not GET")
    if not _has_token(headers, b"sec-websocket-version", "13"):
        return _gorilla_error(
            400, "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"
        )
    key = header_get(headers, b"sec-websocket-key")
    if not _valid_challenge_key(key):
        return _gorilla_error(
            400,
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be "
            "Base64 encoded value of 16-byte in length",
        )
    subprotocol = TUNNEL_PREFIX + chosen
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    )
    return Answer(101, response.encode("latin-1"), protocol=subprotocol)


def parse_port_query(target: bytes | str) -> tuple[int, ...]:
    """The kubelet's ``NewV4Options`` port list from a request target (§5).

    Reads ``ports`` (the API server's parameter, which it forwards to the kubelet
    as ``port``) or, when absent, ``port``. Raises ``ValueError`` with Go's text.
    """
    if isinstance(target, bytes):
        target = target.decode("latin-1")
    query = parse_qsl(urlsplit(target).query, keep_blank_values=True)
    values = [v for k, v in query if k == "ports"] or [v for k, v in query if k == "port"]
    if not values:
        raise ValueError('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError('query parameter "port" cannot be empty')
        for part in value.split(","):
            if not part.isascii() or not part.isdigit():
                raise ValueError(
                    f"unable to parse {go_quote(value)} as a port: "
                    f"strconv.ParseUint: parsing {go_quote(part)}: invalid syntax"
                )
            port = int(part)
            if port > 0xFFFF:
                raise ValueError(
                    f"unable to parse {go_quote(value)} as a port: "
                    f"strconv.ParseUint: parsing {go_quote(part)}: value out of range"
                )
            if port < 1:
                raise ValueError(f"port {go_quote(value)} must be > 0")
            ports.append(port)
    return tuple(ports)


def _xnet_error(status: int, text: str, extra: str = "") -> Answer:
    """golang.org/x/net/websocket's raw answer: no Content-Length, body until close."""
    data = f"HTTP/1.1 {status:03d} {http.HTTPStatus(status).phrase}\r\n{extra}\r\n{text}"
    return Answer(status, data.encode("latin-1"), message=text)


def negotiate_channel_websocket(
    request: h11.Request, supported: Sequence[str] = CHANNEL_PROTOCOLS
) -> Answer:
    """The kubelet's answer to a channel-protocol WebSocket (§5), sans-IO.

    Port query first (400, ``http.Error``), then x/net/websocket's handshake checks,
    then the subprotocol: the first client protocol among ``supported``, ``""`` when
    none is offered; an unsupported one gets x/net's bare ``403 Forbidden``.
    """
    headers = request.headers
    try:
        ports = parse_port_query(request.target)
    except ValueError as exc:
        return _http_error(400, str(exc))
    if request.method != b"GET":
        return _xnet_error(405, "bad method")
    if header_get(headers, b"upgrade").lower() != "websocket" or not _contains(
        headers, b"connection", "upgrade"
    ):
        return _xnet_error(400, "not websocket protocol")
    key = header_get(headers, b"sec-websocket-key")
    if not key:
        return _xnet_error(400, "mismatch challenge/response")
    if header_get(headers, b"sec-websocket-version") != "13":
        return _xnet_error(400, "missing or bad WebSocket Version", "Sec-WebSocket-Version: 13\r\n")
    raw = header_get(headers, b"sec-websocket-protocol").strip()
    offered = [p.strip() for p in raw.split(",")] if raw else [""]
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        answer = _xnet_error(403, "")
        message = (
            f"requested protocol(s) are not supported: [{' '.join(offered)}]; "
            f"supports [{' '.join(supported)}]"
        )
        return Answer(403, answer.data, message=message)
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"Sec-WebSocket-Protocol: {chosen}\r\n\r\n"
    )
    return Answer(101, response.encode("latin-1"), protocol=chosen, ports=ports)


UpgradeKind = Literal["spdy", "spdy-over-websocket", "websocket"]


def classify_upgrade(request: h11.Request) -> UpgradeKind:
    """Which transport a port-forward request asks for (API server + kubelet routing).

    A WebSocket request (``Upgrade: websocket`` and ``Connection`` containing
    ``upgrade``) offering a ``SPDY/3.1+`` subprotocol is the tunnel (B), any other
    WebSocket request the channel protocol (C); everything else goes to the SPDY
    handshake (A), which answers badly formed requests itself.
    """
    headers = request.headers
    if header_get(headers, b"upgrade").lower() == "websocket" and _contains(
        headers, b"connection", "upgrade"
    ):
        offered = header_get(headers, b"sec-websocket-protocol").split(",")
        if any(p.strip().startswith(TUNNEL_PREFIX) for p in offered):
            return "spdy-over-websocket"
        return "websocket"
    return "spdy"
