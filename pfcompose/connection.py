"""One accepted local connection carried to the pod: client-go's steps, minus its flaw.

Over a SPDY session (transports ``spdy``, ``spdy-over-websocket``, ``auto``), each
local connection gets an error stream and a data stream sharing a ``requestid``
(wire-protocol.md §8.2). Bytes are copied both ways; a local EOF becomes a FIN on
the data stream and the remote side keeps sending. Where client-go closes the
whole session when one connection's error stream carries text (kubectl #1169),
we end only that connection and report the text: the session and every other
connection go on.

A connection that breaks mid-transfer is closed towards the local application
with a TCP reset, never a clean FIN, so the application cannot mistake a
truncated transfer for a complete one.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from pfcompose.listeners import set_linger_reset
from pfcompose.wire.channel import ChannelClient
from pfcompose.wire.dial import dial_channel
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import SessionLost, StreamReset, WireError
from pfcompose.wire.session import SpdySession, SpdyStream

READ_SIZE = 256 * 1024
"""Most bytes per local read; large reads keep per-chunk Python work off the hot path."""
MIN_READ_SIZE = 32 * 1024
"""Fewest bytes per local read (Go's io.Copy buffer), however many connections are open."""
READ_BUDGET = 64 * 1024 * 1024
"""Bytes of local reads a forward may hold in flight across its open connections.

A read waits for the session's send lock while holding its bytes: 1000 busy
connections × 256 KiB held 320 MiB at peak (benchmark, docs/performance.md). The
read size shrinks as connections grow so the total stays near this budget, and a
single bulk connection still reads 256 KiB at a time.
"""

STREAM_CREATE_TIMEOUT = 30.0
"""client-go's ``createStreamResponseTimeout``."""


@dataclass
class Traffic:
    """Byte counters a forward aggregates across its connections."""

    bytes_in: int = 0  # pod → local
    bytes_out: int = 0  # local → pod
    active: int = 0  # connections being copied right now

    def read_size(self) -> int:
        """Bytes per local read now: :data:`READ_BUDGET` shared by the open connections."""
        return max(MIN_READ_SIZE, min(READ_SIZE, READ_BUDGET // max(1, self.active)))


@dataclass(frozen=True)
class Outcome:
    """How a connection ended: ``error`` is the one line to report, ``None`` if it ended well."""

    error: str | None = None


async def _close_local(local: trio.SocketStream, *, reset: bool) -> None:
    if reset:
        set_linger_reset(local)
    await trio.aclose_forcefully(local)


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


async def _pump_remote_to_local(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic
) -> None:
    while data := await data_stream.receive_some(READ_SIZE):
        await local.send_all(data)
        traffic.bytes_in += len(data)


async def _pump_local_to_remote(
    local: trio.SocketStream, data_stream: SpdyStream, traffic: Traffic
) -> None:
    while data := await local.receive_some(traffic.read_size()):
        await data_stream.send_all(data)
        traffic.bytes_out += len(data)
    await data_stream.send_eof()


async def forward_over_session(
    session: SpdySession,
    local: trio.SocketStream,
    *,
    local_port: int,
    remote_port: int,
    request_id: int,
    traffic: Traffic,
) -> Outcome:
    """Carry ``local`` over ``session`` to ``remote_port``; always closes ``local``."""
    headers = {"streamtype": "error", "port": str(remote_port), "requestid": str(request_id)}
    where = f"{local_port} -> {remote_port}"
    # Both SYN_STREAMs go out before either reply is awaited (client-go waits for
    # each in turn): the kubelet pairs them by requestid either way, and a new
    # connection costs one round trip instead of two.
    try:
        error_stream = await session.open_stream(headers, wait=False)
    except WireError as exc:
        await _close_local(local, reset=True)
        return Outcome(f"error creating error stream for port {where}: {exc}")
    data_stream: SpdyStream | None = None
    try:
        try:
            data_stream = await session.open_stream({**headers, "streamtype": "data"}, wait=False)
        except WireError as exc:
            failed_data: WireError | None = exc
        else:
            failed_data = None
        try:
            await error_stream.wait_replied(STREAM_CREATE_TIMEOUT)
        except WireError as exc:
            await _close_local(local, reset=True)
            return Outcome(f"error creating error stream for port {where}: {exc}")
        try:
            if failed_data is not None:
                raise failed_data
            assert data_stream is not None
            await error_stream.send_eof()  # the client never writes on the error stream
            await data_stream.wait_replied(STREAM_CREATE_TIMEOUT)
        except WireError as exc:
            await _close_local(local, reset=True)
            return Outcome(f"error creating forwarding stream for port {where}: {exc}")
        error_text: list[str] = []
        async with trio.open_nursery() as nursery:

            async def collect_error() -> None:
                error_text.append(await _read_error_stream(error_stream))

            nursery.start_soon(collect_error)
            broken = await _copy_both_ways(data_stream, local, traffic)
        message = error_text[0] if error_text else ""
    finally:
        error_stream.reset()
        if data_stream is not None:
            data_stream.reset()
    if message:
        await _close_local(local, reset=True)
        return Outcome(f"an error occurred forwarding {where}: {message}")
    await _close_local(local, reset=broken is not None)
    return Outcome(broken)


async def _copy_both_ways(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic
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
        broken = await _copy_until_done(data_stream, local, traffic)
    finally:
        traffic.active -= 1
    data_stream.reset()
    return broken


async def _copy_until_done(
    data_stream: SpdyStream, local: trio.SocketStream, traffic: Traffic
) -> str | None:
    broken: str | None = None
    async with trio.open_nursery() as nursery:

        async def local_to_remote() -> None:
            nonlocal broken
            try:
                await _pump_local_to_remote(local, data_stream, traffic)
            except SessionLost as exc:
                broken = f"lost connection to pod: {exc}"
                nursery.cancel_scope.cancel()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Local reset, or the pod reset the stream: the other pump tells which.
                nursery.cancel_scope.cancel()

        nursery.start_soon(local_to_remote)
        try:
            await _pump_remote_to_local(data_stream, local, traffic)
        except StreamReset:
            broken = broken or "connection reset by the pod"
        except SessionLost as exc:
            broken = f"lost connection to pod: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the local application closed its side
        nursery.cancel_scope.cancel()
    return broken


async def forward_over_channel(
    endpoint: Endpoint,
    path: str,
    local: trio.SocketStream,
    *,
    local_port: int,
    remote_port: int,
    traffic: Traffic,
) -> Outcome:
    """Carry ``local`` over its own channel-protocol WebSocket (transport ``websocket``).

    The channel protocol carries one pod connection per port per WebSocket and has
    no half-close: a local EOF is not passed on; the connection ends when the pod
    side ends or the local side fails.
    """
    where = f"{local_port} -> {remote_port}"
    try:
        client = await dial_channel(endpoint, path, [remote_port])
    except (WireError, OSError, trio.BrokenResourceError) as exc:
        await _close_local(local, reset=True)
        return Outcome(f"error upgrading connection for port {where}: {exc}")
    stream = client.stream(0)
    broken: str | None = None
    traffic.active += 1
    try:
        broken = await _copy_over_channel(client, stream, local, traffic)
    finally:
        traffic.active -= 1
    message = client.error(0)
    if message:
        await _close_local(local, reset=True)
        return Outcome(f"an error occurred forwarding {where}: {message}")
    await _close_local(local, reset=broken is not None)
    return Outcome(broken)


async def _copy_over_channel(
    client: ChannelClient, stream: trio.abc.Stream, local: trio.SocketStream, traffic: Traffic
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
            try:
                while data := await local.receive_some(traffic.read_size()):
                    await stream.send_all(data)
                    traffic.bytes_out += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()

        nursery.start_soon(run_client)
        nursery.start_soon(local_to_remote)
        try:
            while data := await stream.receive_some(READ_SIZE):
                await local.send_all(data)
                traffic.bytes_in += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await client.aclose()
        nursery.cancel_scope.cancel()
    return broken
