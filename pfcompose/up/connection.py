"""One accepted local connection carried to the pod: client-go's steps, minus its flaw.

Over a SPDY session (transports ``spdy``, ``spdy-over-websocket``, ``auto``), each
local connection gets an error stream and a data stream sharing a ``requestid``
(docs/wire-protocol.md §8.2). Bytes are copied both ways; a local EOF becomes a FIN on
the data stream and the remote side keeps sending. Where client-go closes the
whole session when one connection's error stream carries text (kubectl #1169),
we end only that connection and report the text: the session and every other
connection go on.

A connection that breaks mid-transfer is closed towards the local application
with a TCP reset, never a clean FIN, so the application cannot mistake a
truncated transfer for a complete one.

Memory: bytes are taken from one side only when the other side can take them.
Pod data stays in the session's bounded buffers until the local socket takes
it (the session's receive budget counts it there); on a channel, in pieces
taken once the local socket is writable. Over a session, a local read waits
for one of the forward's :data:`SEND_SLOTS` (the session writes one stream at
a time anyway). A connection whose application is quiet holds no slot and no
buffer: no loop keeps its last chunk while it waits for the next.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from pfcompose.kube.access import KubeConfigError
from pfcompose.platform.sockets import writable_now
from pfcompose.up.listeners import set_linger_reset
from pfcompose.wire.channel import ChannelClient
from pfcompose.wire.dial import dial_channel
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import UpgradeError, WireError
from pfcompose.wire.session import SessionLost, SpdySession, SpdyStream, StreamReset
from pfcompose.wire.sockio import read_now, write_now

READ_SIZE = 1024 * 1024
"""Most bytes per local read; large reads keep per-chunk work off the hot path.

Measured against 256 KiB: 256 MiB uploads 1230 -> 1430 MB/s, 0.76 -> 0.48 CPU-s/GiB;
at most :data:`SEND_SLOTS` such reads are held per forward."""
MIN_READ_SIZE = 32 * 1024
"""Fewest bytes per local read (Go's io.Copy buffer), however many connections are open."""
READ_BUDGET = 16 * 1024 * 1024
"""Bytes the ``websocket`` transport's connections hold in flight, each way.

Each such connection has its own WebSocket, so reads are not gated across
connections (one stalled pod must not hold up the others); local reads, socket
reads and the per-connection receive buffer shrink as connections grow so the
total stays near this budget, and a single bulk connection still moves
:data:`READ_SIZE` at a time. Measured at 1000 busy connections: a budget of 64 MiB
peaked at 404 MiB, 16 MiB at 177 MiB.
"""
SEND_SLOTS = 32
"""Local reads of :data:`READ_SIZE` a forward holds at once on its SPDY session.

A read waits for the session's send lock while holding its bytes: 1000 busy
connections × 256 KiB held 320 MiB at peak (benchmark, docs/performance.md). The
session sends one batch at a time, so a few reads queued for the lock keep it
busy; the others wait for a slot with their bytes still in the kernel. Slots are
taken only once the local socket is readable: a quiet connection holds none.
"""

STREAM_CREATE_TIMEOUT = 30.0
"""client-go's ``createStreamResponseTimeout``."""


RESULTS = ("ok", "refused", "reset", "error")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the connect-latency histogram, Prometheus' default spread
shifted down: a connection over a live session opens in about one round trip."""
RECENT = 50


@dataclass
class Traffic:
    """Byte counters a forward aggregates across its connections."""

    bytes_in: int = 0  # pod → local
    bytes_out: int = 0  # local → pod
    active: int = 0  # connections being copied right now
    send_slots: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(SEND_SLOTS))
    """Local reads in flight towards the (one) session of the forward."""

    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    """Ended connections by result class (``ok``, ``refused``, ``reset``, ``error``)."""
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Connect latencies (accept → streams open) per :data:`LATENCY_BUCKETS` bucket; +Inf last."""
    latency_sum: float = 0.0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    """The last ended connections, as :meth:`finish` records them (``top``'s details)."""

    def read_size(self) -> int:
        """Bytes per local read now: :data:`READ_BUDGET` shared by the open connections."""
        return max(MIN_READ_SIZE, min(READ_SIZE, READ_BUDGET // max(1, self.active)))

    def opened(self, conn: ConnStats) -> None:
        """The connection's streams are open: count its connect latency (once per connection)."""
        conn.opened = time.monotonic()
        seconds = conn.opened - conn.accepted
        self.latency_sum += seconds
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency[index] += 1
                return
        self.latency[-1] += 1

    def finish(self, conn: ConnStats, outcome: Outcome) -> dict[str, Any]:
        """Classify an ended connection, count it, keep it in :attr:`recent`; its record."""
        result, reason = classify(conn, outcome)
        self.results[result] += 1
        record = {
            "peer": conn.peer,
            "local": conn.local,
            "started": round(conn.started, 6),
            "duration": round(time.monotonic() - conn.accepted, 6),
            "connect_latency": (
                None if conn.opened is None else round(conn.opened - conn.accepted, 6)
            ),
            "bytes_in": conn.bytes_in,
            "bytes_out": conn.bytes_out,
            "result": result,
            "reason": reason,
        }
        self.recent.append(record)
        return record


@dataclass(slots=True)
class ConnStats:
    """One connection's own counters, bumped in the same copy loops as :class:`Traffic`'s
    (two int adds per chunk; nothing allocated per chunk)."""

    peer: str
    local: int
    accepted: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.time)
    opened: float | None = None  # monotonic time both streams were open
    bytes_in: int = 0  # pod → local
    bytes_out: int = 0  # local → pod
    ended_by: str | None = None  # "local close" or "pod close": which side finished first

    def end(self, how: str) -> None:
        if self.ended_by is None:
            self.ended_by = how


def classify(conn: ConnStats, outcome: Outcome) -> tuple[str, str]:
    """``(result, reason)``: ``ok`` ended by a side closing, ``refused`` by the pod port
    refusing, ``reset`` by the pod resetting it, ``error`` for anything else (the text)."""
    error = outcome.error
    if error is None:
        return "ok", conn.ended_by or "local close"
    if "connection refused" in error:
        return "refused", error
    if error == RESET_BY_POD or error.endswith(f": {RESET_BY_POD}"):
        return "reset", "pod reset"
    return "error", error


RESET_BY_POD = "connection reset by the pod"


@dataclass(frozen=True)
class Outcome:
    """How a connection ended: ``error`` is the one line to report, ``None`` if it ended well.

    ``pod_gone``: the error-stream text says the pod itself is gone (not just this
    connection's port): the forward re-resolves at once (:func:`pod_gone_text`).
    """

    error: str | None = None
    pod_gone: bool = False


_POD_GONE = re.compile(
    r'network namespace for sandbox "?[^"\s]*"? is closed'  # containerd
    r'|failed to find sandbox "?[^"\s]*"? in store'  # containerd
    r"|sandbox \S+ is not running"  # CRI-O
    r"|could not find sandbox \S+"  # CRI-O
    r"|PodSandbox with ID starting with \S+ not found"  # CRI-O
    r"|pod not found"  # kubelet
)


def pod_gone_text(message: str) -> bool:
    """Whether an error-stream text means the pod's sandbox is gone (the runtimes' wordings:
    containerd's ``network namespace for sandbox … is closed`` / ``failed to find sandbox …
    in store``, CRI-O's ``sandbox … is not running``, ``pod not found``). Anything else
    (a refused port, an app reset) ends that connection only."""
    return _POD_GONE.search(message) is not None


async def _close_local(local: trio.SocketStream, *, reset: bool) -> None:
    if reset:
        set_linger_reset(local)
    # What ``aclose_forcefully`` comes to for a socket, without its cancel scope
    # (a close never blocks): trio wakes any task still waiting on it, then closes.
    local.socket.close()
    await trio.lowlevel.checkpoint()


async def _read_error_stream(stream: SpdyStream) -> str:
    """All text the server writes on the error stream.

    RST counts as no text (§13.2: how newer kubelets end a pair after a pod-side
    reset); a session that dies under it also ends it without text — the data
    stream reports that loss.
    """
    chunks: list[bytes] = []
    try:
        while data := await stream.receive_some(65536):
            chunks.append(data)
    except (StreamReset, SessionLost):
        pass
    return b"".join(chunks).decode("utf-8", "replace")


async def _pump_session_to_local(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic, conn: ConnStats
) -> None:
    """Write the stream's bytes to ``local`` straight from the session's buffer.

    Bytes leave the buffer only as the socket takes them, so what a slow
    application has not read yet stays counted against the receive budget.
    ``peek`` is each round's checkpoint.
    """
    sock = local.socket
    while view := await data_stream.peek():
        try:
            sent = write_now(sock, view)
        finally:
            view.release()
        if sent:
            data_stream.consume(sent)
            traffic.bytes_in += sent
            conn.bytes_in += sent
        else:
            await trio.lowlevel.wait_writable(sock)
    conn.end("pod close")


async def _pump_channel_to_local(
    client: ChannelClient, local: trio.SocketStream, traffic: Traffic, conn: ConnStats
) -> None:
    """Copy to ``local`` in pieces taken only once ``local`` can take bytes.

    What a slow application has not read stays in the channel's bounded buffer.
    Each connection has a WebSocket of its own, so its buffer and its socket reads
    shrink as connections multiply (:meth:`Traffic.read_size`): 1000 busy ones
    held ~500 MiB with a fixed 1 MiB buffer and 256 KiB reads each.
    """
    source = client.stream(0)
    while True:
        share = traffic.read_size()
        client.buffer_limit = client.ws.receive_size = share
        if not writable_now(local.socket):
            await local.wait_send_all_might_not_block()
        data = await source.receive_some(share)
        if not data:
            conn.end("pod close")
            return
        await local.send_all(data)
        traffic.bytes_in += len(data)
        conn.bytes_in += len(data)
        del data  # not held while waiting for the next piece


async def _pump_local_to_remote(
    local: trio.SocketStream, data_stream: SpdyStream, traffic: Traffic, conn: ConnStats
) -> None:
    """Copy ``local``'s bytes to the data stream, then pass its EOF on (FIN).

    A read holds one of the forward's send slots; a connection that finds no
    free slot waits until it has bytes to send before queueing for one. Each
    round's checkpoint is the send, or the wait for bytes.
    """
    sock = local.socket
    slots = traffic.send_slots
    while True:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.lowlevel.wait_readable(sock)
            await slots.acquire()
        try:
            data = read_now(sock, READ_SIZE)
            if data:
                await data_stream.send_all(data)
        finally:
            slots.release()
        if data is None:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not data:
            break
        traffic.bytes_out += len(data)
        conn.bytes_out += len(data)
        del data  # not held while the application is quiet
    conn.end("local close")
    await data_stream.send_eof()


async def forward_over_session(
    session: SpdySession,
    local: trio.SocketStream,
    *,
    local_port: int,
    remote_port: int,
    request_id: int,
    traffic: Traffic,
    conn: ConnStats | None = None,
) -> Outcome:
    """Carry ``local`` over ``session`` to ``remote_port``; always closes ``local``."""
    conn = conn if conn is not None else ConnStats("", local_port)
    headers = {"streamtype": "error", "port": str(remote_port), "requestid": str(request_id)}
    where = f"{local_port} -> {remote_port}"
    # Both SYN_STREAMs go out in one write before either reply is awaited
    # (client-go opens and awaits each in turn): the kubelet pairs them by
    # requestid either way, and a new connection costs one round trip, not two.
    try:
        error_stream, data_stream = await session.open_streams(
            [headers, {**headers, "streamtype": "data"}]
        )
    except WireError as exc:
        await _close_local(local, reset=True)
        return Outcome(f"error creating error stream for port {where}: {exc}")
    try:
        try:
            await error_stream.wait_replied(STREAM_CREATE_TIMEOUT)
        except WireError as exc:
            await _close_local(local, reset=True)
            return Outcome(f"error creating error stream for port {where}: {exc}")
        # The client never writes on the error stream; its FIN leaves with the next write.
        error_stream.send_eof_later()
        try:
            await data_stream.wait_replied(STREAM_CREATE_TIMEOUT)
        except WireError as exc:
            await _close_local(local, reset=True)
            return Outcome(f"error creating forwarding stream for port {where}: {exc}")
        traffic.opened(conn)
        broken = await _copy_both_ways(data_stream, local, traffic, conn)
        # As client-go, wait for the error stream to end (the kubelet ends it with the
        # connection); whatever text it carried is already buffered by then.
        message = await _read_error_stream(error_stream)
    finally:
        error_stream.reset()
        data_stream.reset()
    return await _finish(local, where, message, broken)


async def _finish(
    local: trio.SocketStream, where: str, message: str | None, broken: str | None
) -> Outcome:
    """Close ``local`` as the connection ended: text from the pod's error stream or a
    break resets it (a truncated transfer must not look complete), else a clean close."""
    if message:
        await _close_local(local, reset=True)
        return Outcome(
            f"an error occurred forwarding {where}: {message}", pod_gone=pod_gone_text(message)
        )
    await _close_local(local, reset=broken is not None)
    return Outcome(broken)


async def _copy_both_ways(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic, conn: ConnStats
) -> str | None:
    """Copy until the pod side ends or the local side fails; returns why it broke, if it did.

    client-go's order: when the remote side is done (FIN or RST) or the local side
    fails, reset the data stream (a no-op on the wire if we already sent FIN).
    A local application that goes away early is not an error worth reporting; the
    pod side resetting or the session dying is.
    """
    broken: str | None = None
    traffic.active += 1
    try:
        broken = await _copy_until_done(data_stream, local, traffic, conn)
    finally:
        traffic.active -= 1
    data_stream.reset()
    return broken


async def _copy_until_done(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic, conn: ConnStats
) -> str | None:
    broken: str | None = None
    async with trio.open_nursery() as nursery:

        async def session_to_local() -> None:
            nonlocal broken
            try:
                await _pump_session_to_local(data_stream, local, traffic, conn)
            except StreamReset:
                broken = broken or RESET_BY_POD
            except SessionLost as exc:
                broken = f"lost connection to pod: {exc}"
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.end("local close")  # the local application closed its side
            nursery.cancel_scope.cancel()  # the pod side is done: so is the connection

        nursery.start_soon(session_to_local)
        # This task copies towards the pod itself: the application's first bytes
        # (usually there by now) leave at once, with the error stream's FIN.
        try:
            await _pump_local_to_remote(local, data_stream, traffic, conn)
        except SessionLost as exc:
            broken = f"lost connection to pod: {exc}"
            nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Local reset, or the pod reset the stream: the other pump tells which.
            nursery.cancel_scope.cancel()
    return broken


EndpointSource = Callable[[bool], Awaitable[Endpoint]]
"""The endpoint (with the current credential) for one connection attempt; called with
True after the server answered 401, to get freshly evaluated credentials."""


async def _dial_channel_fresh(
    endpoint: Endpoint | EndpointSource, path: str, port: int
) -> ChannelClient:
    """Dial with the credential of this moment; on 401 re-evaluate once and retry."""
    if isinstance(endpoint, Endpoint):
        return await dial_channel(endpoint, path, [port])
    try:
        return await dial_channel(await endpoint(False), path, [port])
    except UpgradeError as exc:
        if exc.status != 401:
            raise
    return await dial_channel(await endpoint(True), path, [port])


async def forward_over_channel(
    endpoint: Endpoint | EndpointSource,
    path: str,
    local: trio.SocketStream,
    *,
    local_port: int,
    remote_port: int,
    traffic: Traffic,
    conn: ConnStats | None = None,
) -> Outcome:
    """Carry ``local`` over its own channel-protocol WebSocket (transport ``websocket``).

    The channel protocol carries one pod connection per port per WebSocket and has
    no half-close: a local EOF is not passed on; the connection ends when the pod
    side ends or the local side fails. ``endpoint`` may be an :data:`EndpointSource`,
    so each connection takes the credential current at its dial.
    """
    where = f"{local_port} -> {remote_port}"
    conn = conn if conn is not None else ConnStats("", local_port)
    try:
        client = await _dial_channel_fresh(endpoint, path, remote_port)
    except (WireError, OSError, trio.BrokenResourceError, KubeConfigError) as exc:
        await _close_local(local, reset=True)
        return Outcome(f"error upgrading connection for port {where}: {exc}")
    stream = client.stream(0)
    broken: str | None = None
    traffic.opened(conn)
    traffic.active += 1
    try:
        broken = await _copy_over_channel(client, stream, local, traffic, conn)
    finally:
        traffic.active -= 1
    message = client.error(0)
    return await _finish(local, where, message, broken)


async def _copy_over_channel(
    client: ChannelClient,
    stream: trio.abc.Stream,
    local: trio.SocketStream,
    traffic: Traffic,
    conn: ConnStats,
) -> str | None:
    broken: str | None = None
    async with trio.open_nursery() as nursery:

        async def run_client() -> None:
            nonlocal broken
            try:
                await client.run()
            except (WireError, trio.BrokenResourceError, OSError) as exc:
                broken = f"lost connection to pod: {exc}"

        async def local_to_remote() -> None:
            # (No wait for the WebSocket to be writable before reading: its
            # receiving task may write a pong or close frame meanwhile, and trio
            # allows one sender per stream. Reads are small: traffic.read_size().)
            try:
                while True:
                    data = await local.receive_some(traffic.read_size())
                    if not data:
                        conn.end("local close")
                        break
                    await stream.send_all(data)
                    traffic.bytes_out += len(data)
                    conn.bytes_out += len(data)
                    del data  # not held while the application is quiet
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.end("local close")
                nursery.cancel_scope.cancel()

        nursery.start_soon(run_client)
        nursery.start_soon(local_to_remote)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await _pump_channel_to_local(client, local, traffic, conn)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await client.aclose()
        nursery.cancel_scope.cancel()
    return broken
