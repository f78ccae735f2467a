"""The kubelet's port-forward server (CRI streaming ``portforward``), §5 and §9.

After the API server routed a ``pods/NAME/portforward`` upgrade here, this module
completes the handshake with ``wire.handshake`` and ``wire.upgrade_server`` and then:

* SPDY and SPDY-in-WebSocket (§9): validates each new stream (§9.1; RST on bad
  headers), replies with an empty SYN_REPLY, pairs error and data streams by
  ``requestid`` under a 30 s timer (§9.2), dials the pod port (in process for the
  sandbox's own pod processes, TCP for ``target:`` ports) and copies both ways
  with half-close. A refused dial writes the containerd-format error text on the
  error stream then FINs both (§9.3); a reset from the pod side (ECONNRESET/EPIPE)
  RSTs both streams without text (kubelet ≥ 1.32). Session end: RST every stream,
  GOAWAY, close.
* Channel protocol (§5): the port preamble, one pod connection per requested port,
  the error text on the odd channel, close 1000 when every port is done.

Pod-side error text (containerd, ``uid`` empty, ``pod`` = sandbox ID)::

    error forwarding port 5000 to pod <sandbox-id>, uid : failed to execute portforward
    in network namespace "/var/run/netns/cni-<uuid>": failed to connect to localhost:5000
    inside namespace "<sandbox-id>", IPv4: dial tcp4 127.0.0.1:5000: connect: connection
    refused IPv6 dial tcp6 [::1]:5000: connect: connection refused

(one line). Every copy reads up to 1 MiB at a time.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import trio

from pfcompose.sandbox.apiserver import Request
from pfcompose.sandbox.backends import Backends
from pfcompose.sandbox.faults import StreamFaults
from pfcompose.sandbox.pipe import PipeStream
from pfcompose.sandbox.state import Pod
from pfcompose.wire.channel import ChannelServer
from pfcompose.wire.errors import WireError
from pfcompose.wire.handshake import UpgradeRejected, classify_upgrade
from pfcompose.wire.session import SpdySession, SpdyStream, open_session
from pfcompose.wire.upgrade_server import (
    accept_channel_websocket,
    accept_spdy,
    accept_spdy_over_websocket,
)
from pfcompose.wire.websocket import WebSocketByteStream, WebSocketConnection

__all__ = ["PAIR_TIMEOUT", "Kubelet", "dial_error_text", "validate_stream_headers"]

PAIR_TIMEOUT = 30.0
"""``DefaultStreamCreationTimeout``: how long the first stream of a pair waits (§7.2)."""
BUFSIZE = 1024 * 1024
"""Reads from the pod and from sessions: large reads, fewer task switches per GiB."""


def validate_stream_headers(headers: dict[str, str]) -> str | None:
    """§9.1: None when the kubelet replies to the stream, else its (logged) reason."""
    port = headers.get("port")
    if port is None:
        return '"port" header is required'
    if not port.isascii() or not port.isdigit():
        return f'unable to parse "{port}" as a port: {_parse_uint_error(port, "invalid syntax")}'
    if int(port) > 0xFFFF:
        reason = _parse_uint_error(port, "value out of range")
        return f'unable to parse "{port}" as a port: {reason}'
    if int(port) == 0:
        return f'port "{port}" must be > 0'
    kind = headers.get("streamtype")
    if kind is None:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"'
    return None


def _parse_uint_error(text: str, why: str) -> str:
    return f'strconv.ParseUint: parsing "{text}": {why}'


DIAL_ERRORS = ("refused", "netns-closed", "not-in-store", "crio-not-running", "pod-not-found")
"""What the runtime may answer a port-forward with (``StreamFaults.dial_error``): a refused
port (the pod is fine), or one of the ways the pod's sandbox is gone (issue 12 §5)."""


def dial_error_text(pod: Pod, port: int, kind: str = "refused") -> str:
    """The kubelet's error-stream text (one line, no newline) for ``kind``.

    ``refused``: containerd, the port is closed (§9.3). The others are the pod's
    sandbox being gone, in the runtimes' own words, each wrapped by the kubelet's
    ``error forwarding port P to pod ID, uid : …``: containerd's ``network namespace
    for sandbox "ID" is closed`` and ``failed to find sandbox "ID" in store: not
    found`` (criService.portForward), CRI-O's ``sandbox ID is not running``
    (StreamService.PortForward), and ``pod not found ("NAME_NS")``.
    """
    sid = pod.sandbox_id
    head = f"error forwarding port {port} to pod {sid}, uid : "
    if kind == "netns-closed":
        return head + f'network namespace for sandbox "{sid}" is closed'
    if kind == "not-in-store":
        return head + f'failed to find sandbox "{sid}" in store: not found'
    if kind == "crio-not-running":
        return head + f"sandbox {sid} is not running"
    if kind == "pod-not-found":
        return head + f'pod not found ("{pod.name}_{pod.namespace}")'
    netns = uuid.uuid5(uuid.NAMESPACE_URL, sid)
    return (
        f"error forwarding port {port} to pod {sid}, uid : failed to execute portforward in "
        f'network namespace "/var/run/netns/cni-{netns}": failed to connect to '
        f'localhost:{port} inside namespace "{sid}", IPv4: dial tcp4 127.0.0.1:{port}: '
        f"connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: connection refused"
    )


def _socket_of(stream: Any) -> socket.socket | None:
    """The OS socket under a SocketStream or SSLStream (for abortive closes)."""
    for _ in range(4):
        sock = getattr(stream, "socket", None)
        if isinstance(sock, trio.socket.SocketType):
            return sock  # type: ignore[return-value]
        stream = getattr(stream, "transport_stream", None) or getattr(stream, "transport", None)
        if stream is None:
            return None
    return None


def _set_rst_on_close(stream: Any) -> None:
    if isinstance(stream, PipeStream):
        stream.abort()
        return
    sock = _socket_of(stream)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _is_reset(exc: BaseException) -> bool:
    """ECONNRESET / EPIPE from the pod side: the app crashed or reset."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


@dataclass(eq=False)
class _Pair:
    request_id: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    timer: trio.CancelScope = field(default_factory=trio.CancelScope)


PodStream = trio.SocketStream | PipeStream
"""The kubelet's side of a pod connection: in process, or TCP to a ``target:``."""


@dataclass(eq=False)
class _PodConn:
    """One kubelet → pod connection, so a fault can reset it."""

    pod: Pod
    stream: PodStream
    scope: trio.CancelScope
    reset: bool = False


@dataclass(eq=False)
class _Upgraded:
    """One upgraded port-forward connection (a session or a channel WebSocket)."""

    pod: Pod
    transport: trio.abc.Stream
    scope: trio.CancelScope
    kind: str
    session: SpdySession | None = None
    pairs: set[_Pair] = field(default_factory=set)
    dropped: bool = False


class Kubelet:
    """Terminates port-forward connections for every pod of one sandbox."""

    def __init__(self, backends: Backends, faults: StreamFaults) -> None:
        self.backends = backends
        self.faults = faults
        self._conns: set[_Upgraded] = set()
        self._pod_conns: set[_PodConn] = set()
        self.no_tunnel = False
        """Play a ≤1.29 cluster: a SPDY-in-WebSocket request reaches the kubelet's channel
        handler, which answers 400 ``query parameter "port" is required`` (kubectl then
        falls back to SPDY)."""

    # -- entry point ------------------------------------------------------------------
    async def serve(
        self, request: Request, transport: trio.abc.Stream, trailing: bytes, pod: Pod
    ) -> None:
        """Answer the upgrade and serve the connection until it ends (or a fault ends it)."""
        h11_request = request.h11_request
        kind = classify_upgrade(h11_request)
        if kind == "spdy-over-websocket" and self.no_tunnel:
            kind = "websocket"  # ≤1.29: no tunnel, the kubelet's own WebSocket handler answers
        up = _Upgraded(pod, transport, trio.CancelScope(), kind)
        self._conns.add(up)
        try:
            with up.scope:
                stream: trio.abc.Stream
                try:
                    if kind == "websocket":
                        ws, _, ports = await accept_channel_websocket(
                            h11_request, transport, trailing
                        )
                        ws.receive_size = BUFSIZE
                        await self._serve_channel(ws, pod, ports, up)
                        return
                    if kind == "spdy-over-websocket":
                        stream, _ = await accept_spdy_over_websocket(
                            h11_request, transport, trailing
                        )
                        assert isinstance(stream, WebSocketByteStream)
                        stream.ws.receive_size = BUFSIZE
                    else:
                        stream, _ = await accept_spdy(h11_request, transport, trailing)
                except UpgradeRejected:
                    return
                await self._serve_spdy(stream, pod, up)
        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            pass
        finally:
            self._conns.discard(up)
            if up.dropped:
                _set_rst_on_close(transport)
            await trio.aclose_forcefully(transport)

    # -- SPDY (transports A and B) ---------------------------------------------------
    async def _serve_spdy(self, stream: trio.abc.Stream, pod: Pod, up: _Upgraded) -> None:
        pairs: dict[str, _Pair] = {}
        async with (
            open_session(stream, "server", read_size=BUFSIZE) as session,
            trio.open_nursery() as nursery,
        ):
            up.session = session
            try:
                while True:
                    s = await session.accept_stream()
                    if self.faults.delay > 0 or self.faults.refuse:
                        nursery.start_soon(self._admit_later, s, pairs, pod, up, nursery)
                    else:
                        await self._admit(s, pairs, pod, up, nursery)
            except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
                pass
            finally:
                # Session over (client GOAWAY/EOF): RST what is left, GOAWAY, close.
                nursery.cancel_scope.cancel()
                for pair in list(up.pairs):
                    _reset_pair(pair)
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await session.aclose()

    async def _admit_later(
        self, s: SpdyStream, pairs: dict[str, _Pair], pod: Pod, up: _Upgraded, nursery: trio.Nursery
    ) -> None:
        """The fault path: refuse the stream, or reply after ``faults.delay`` seconds."""
        try:
            if self.faults.refuse:
                await s.reject()
                return
            await trio.sleep(self.faults.delay)
        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            return
        await self._admit(s, pairs, pod, up, nursery)

    async def _admit(
        self, s: SpdyStream, pairs: dict[str, _Pair], pod: Pod, up: _Upgraded, nursery: trio.Nursery
    ) -> None:
        """§9.1 + §9.2: validate, reply, pair; start forwarding once a pair is complete."""
        headers: dict[str, str] = s.headers
        try:
            if validate_stream_headers(headers) is not None:
                await s.reject()
                return
            await s.reply()
        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            return  # the client reset it first: nothing to pair (a lost session ends the loop)
        kind = headers["streamtype"]
        key = headers.get("requestid")
        if key is None:  # pre-2016 clients: pair by stream ID (§13.13)
            key = str(s.stream_id if kind == "error" else s.stream_id - 2)
        pair = pairs.get(key)
        if pair is None:
            pair = pairs[key] = _Pair(key)
            up.pairs.add(pair)
            nursery.start_soon(self._pair_timer, pair, pairs, up)
        if getattr(pair, kind) is not None:
            if pair.error is not None:
                text = f"error processing stream for request {key}: {kind} stream already assigned"
                nursery.start_soon(_send_quietly, pair.error, text.encode())
            return
        setattr(pair, kind, s)
        if pair.error is not None and pair.data is not None:
            pair.timer.cancel()
            del pairs[key]
            nursery.start_soon(self._forward, pair, pod, up)

    async def _pair_timer(self, pair: _Pair, pairs: dict[str, _Pair], up: _Upgraded) -> None:
        with pair.timer:
            await trio.sleep(PAIR_TIMEOUT)
            pairs.pop(pair.request_id, None)
            up.pairs.discard(pair)
            if pair.error is not None:  # written, but the stream is left open (§13.14)
                text = (
                    f"(conn={id(up):#x}, request={pair.request_id}) timed out waiting for streams"
                )
                await _send_quietly(pair.error, text.encode())

    async def _forward(self, pair: _Pair, pod: Pod, up: _Upgraded) -> None:
        """One stream pair ⇄ one pod connection (§9.2, §9.3)."""
        error, data_stream = pair.error, pair.data
        assert error is not None and data_stream is not None
        port = int(data_stream.headers["port"])
        try:
            conn = await self._dial(pod, port)
        except OSError:
            text = dial_error_text(pod, port, self.faults.dial_error or "refused")
            await _send_quietly(error, text.encode())
            await _eof_quietly(error)
            await _eof_quietly(data_stream)
            up.pairs.discard(pair)
            return
        pc = _PodConn(pod, conn, trio.CancelScope())
        self._pod_conns.add(pc)
        try:
            with pc.scope:
                async with trio.open_nursery() as nursery:

                    async def client_to_pod() -> None:
                        """The client's FIN half-closes the pod socket (§9.4)."""
                        try:
                            while data := await data_stream.receive_some(BUFSIZE):
                                try:
                                    await conn.send_all(data)
                                except (trio.BrokenResourceError, trio.ClosedResourceError):
                                    pc.reset = True  # EPIPE/ECONNRESET from the pod
                                    nursery.cancel_scope.cancel()
                                    return
                            await conn.send_eof()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
                            return  # client RST or session gone: stop feeding the pod

                    nursery.start_soon(client_to_pod)
                    while True:
                        try:
                            data = await conn.receive_some(BUFSIZE)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pc.reset = True
                            nursery.cancel_scope.cancel()
                            return
                        if not data:
                            break
                        try:
                            await data_stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
                            pc.reset = True  # the client's side is gone; say so with RST
                            nursery.cancel_scope.cancel()
                            return
                    # Pod EOF: the runtime returns nil → FIN data and error (§9.3); the
                    # client may still send until its own FIN or RST.
                    await _eof_quietly(data_stream)
                    await _eof_quietly(error)
        finally:
            self._pod_conns.discard(pc)
            up.pairs.discard(pair)
            if pc.reset:
                _reset_pair(pair)
                _set_rst_on_close(conn)
            await trio.aclose_forcefully(conn)

    async def _dial(self, pod: Pod, port: int) -> PodStream:
        if self.faults.dial_error is not None:  # the runtime answers with this error
            raise ConnectionRefusedError(errno.ECONNREFUSED, self.faults.dial_error)
        pipe = self.backends.connect(pod, port)
        if pipe is not None:
            await trio.lowlevel.checkpoint()
            return pipe
        address = self.backends.address(pod, port)
        if address is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused")
        stream = await trio.open_tcp_stream(*address)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        return stream

    # -- channel protocol (transport C) -------------------------------------------------
    async def _serve_channel(
        self, ws: WebSocketConnection, pod: Pod, ports: tuple[int, ...], up: _Upgraded
    ) -> None:
        """§5: preamble, one pod connection per port, error text on the odd channel;
        the WebSocket closes (1000) when every port is done (``wire.channel``)."""
        server = await ChannelServer.open(ws, ports)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.run)
                async with trio.open_nursery() as ports_nursery:
                    for i, port in enumerate(ports):
                        ports_nursery.start_soon(self._channel_port, server, pod, i, port)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            pass  # the client went away: nothing left to tell it

    async def _channel_port(self, server: ChannelServer, pod: Pod, i: int, port: int) -> None:
        """One requested port: one pod connection, no half-close (§5)."""
        try:
            conn = await self._dial(pod, port)
        except OSError:
            await server.finish(i, dial_error_text(pod, port, self.faults.dial_error or "refused"))
            return
        stream = server.stream(i)
        pc = _PodConn(pod, conn, trio.CancelScope())
        self._pod_conns.add(pc)
        try:
            with pc.scope:
                async with trio.open_nursery() as nursery:

                    async def to_pod() -> None:
                        while data := await stream.receive_some(BUFSIZE):
                            await conn.send_all(data)
                        nursery.cancel_scope.cancel()  # the WebSocket closed

                    nursery.start_soon(to_pod)
                    while data := await conn.receive_some(BUFSIZE):
                        await stream.send_all(data)
                    nursery.cancel_scope.cancel()  # the pod closed: the port goes silent
        except* (trio.BrokenResourceError, trio.ClosedResourceError, WireError):
            pass  # pod reset or WebSocket gone
        finally:
            self._pod_conns.discard(pc)
            if pc.reset:
                _set_rst_on_close(conn)
            await trio.aclose_forcefully(conn)
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, WireError),
            ):
                await server.finish(i)

    # -- faults -----------------------------------------------------------------------
    async def pod_gone(self, pod: Pod) -> None:
        """The pod was deleted: reset its pairs, then GOAWAY and close its sessions."""
        for pc in list(self._pod_conns):
            if pc.pod is pod:
                pc.reset = True
                pc.scope.cancel()
        for up in list(self._conns):
            if up.pod is pod:
                for pair in list(up.pairs):
                    _reset_pair(pair)
                up.scope.cancel()
        await trio.lowlevel.checkpoint()

    def reset_target_connections(self, pod: Pod) -> int:
        """Reset the kubelet's own connections to ``target:`` ports of ``pod``."""
        n = 0
        for pc in list(self._pod_conns):
            if pc.pod is pod and _is_target(pod, pc):
                pc.reset = True
                pc.scope.cancel()
                n += 1
        return n

    def drop_all(self) -> int:
        """Cut every upgraded connection at the TCP level (RST, no GOAWAY)."""
        conns = list(self._conns)
        for up in conns:
            up.dropped = True
            if up.session is not None:
                up.session.abort()
            up.scope.cancel()
        return len(conns)

    async def aclose(self) -> None:
        for up in list(self._conns):
            up.scope.cancel()
        await trio.lowlevel.checkpoint()


def _is_target(pod: Pod, pc: _PodConn) -> bool:
    if isinstance(pc.stream, PipeStream):
        return False
    try:
        peer = pc.stream.socket.getpeername()
    except OSError:
        return False
    return any(cp.serve.kind == "target" and (cp.serve.port == peer[1]) for cp in pod.ports)


def _reset_pair(pair: _Pair) -> None:
    for s in (pair.data, pair.error):
        if s is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, WireError):
                s.reset()


async def _send_quietly(stream: SpdyStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, WireError):
        await stream.send_all(data)


async def _eof_quietly(stream: SpdyStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, WireError):
        await stream.send_eof()
