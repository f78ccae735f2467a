"""The pods' processes: a real TCP listener on loopback for every served pod port.

The kubelet's "dial localhost:PORT in the pod's network namespace" becomes a dial
to the listener this module opened for (pod, PORT). Behaviours:

* ``echo`` – sends back what it receives; answers EOF with EOF.
* ``http`` – answers every HTTP/1.1 request with 200 and a body naming pod,
  namespace and port (what a curl demo shows).
* ``blob`` – the benchmark target; a one-line command, then raw bytes:
  ``PUT <n>\\n`` + n bytes (or ``PUT\\n`` + bytes until EOF) → ``<sha256 hex>\\n``, close;
  ``GET <n>\\n`` → n bytes of :func:`blob_bytes`, close.
* ``target: HOST:PORT`` – no listener here: the kubelet dials that address itself.
* ``none`` – nothing listens; the port refuses, as a closed port in a pod does.

The data paths read up to 256 KiB at a time and never touch single bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

from pfcompose.sandbox.state import Behaviour, Pod

__all__ = ["BLOB_BLOCK", "Backends", "blob_bytes", "blob_sha256", "http_body"]

BUFSIZE = 256 * 1024
_BLOCK_HASHES = 32768  # 32 768 × 32 bytes = 1 MiB


def _make_block() -> bytes:
    return b"".join(
        hashlib.sha256(b"pfcompose-blob:%d" % i).digest() for i in range(_BLOCK_HASHES)
    )


BLOB_BLOCK = _make_block()
"""The 1 MiB period of ``blob``'s download data: sha256(b"pfcompose-blob:<i>") for i = 0, 1, …"""


def blob_bytes(n: int) -> bytes:
    """The first ``n`` bytes ``GET <n>`` sends (for tests; benchmarks should stream)."""
    whole, rest = divmod(n, len(BLOB_BLOCK))
    return BLOB_BLOCK * whole + BLOB_BLOCK[:rest]


def blob_sha256(n: int) -> str:
    """sha256 hex of :func:`blob_bytes` without building it."""
    h = hashlib.sha256()
    whole, rest = divmod(n, len(BLOB_BLOCK))
    for _ in range(whole):
        h.update(BLOB_BLOCK)
    h.update(BLOB_BLOCK[:rest])
    return h.hexdigest()


def http_body(pod: Pod, port: int) -> bytes:
    return f"pfcompose sandbox: pod {pod.name} namespace {pod.namespace} port {port}\n".encode()


def abort(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER 0): the app crashed."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(eq=False)
class _Conn:
    stream: trio.SocketStream
    scope: trio.CancelScope


@dataclass
class _PodProcesses:
    pod: Pod
    scope: trio.CancelScope
    addresses: dict[int, tuple[str, int]] = field(default_factory=dict)
    conns: set[_Conn] = field(default_factory=set)


class Backends:
    """Starts, stops and crashes the pods' listeners; all tasks live in one nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._pods: dict[tuple[str, str], _PodProcesses] = {}

    def address(self, pod: Pod, port: int) -> tuple[str, int] | None:
        """Where the kubelet connects for ``pod``'s ``port``; None: nothing listens."""
        cp = pod.port(port)
        if cp is None:
            return None
        if cp.serve.kind == "target":
            return (cp.serve.host, cp.serve.port)
        procs = self._pods.get(pod.key)
        if procs is None or procs.pod is not pod:
            return None
        return procs.addresses.get(port)

    async def start(self, pod: Pod) -> None:
        """Open a listener for each served port of ``pod`` (idempotent)."""
        if pod.key in self._pods:
            return
        procs: _PodProcesses = await self._nursery.start(self._run, pod)
        self._pods[pod.key] = procs

    async def _run(
        self, pod: Pod, *, task_status: trio.TaskStatus[_PodProcesses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            procs = _PodProcesses(pod, scope)
            async with trio.open_nursery() as nursery:
                for cp in pod.ports:
                    if cp.serve.kind in ("none", "target") or cp.protocol != "TCP":
                        continue
                    if cp.container_port in procs.addresses:
                        continue
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    sockname = listeners[0].socket.getsockname()
                    procs.addresses[cp.container_port] = ("127.0.0.1", int(sockname[1]))
                    handler = self._handler(procs, cp.serve, cp.container_port)
                    nursery.start_soon(trio.serve_listeners, handler, listeners)
                task_status.started(procs)

    def _handler(
        self, procs: _PodProcesses, behaviour: Behaviour, port: int
    ) -> Callable[[trio.SocketStream], Awaitable[None]]:
        serve = {"echo": _echo, "http": _http, "blob": _blob}[behaviour.kind]

        async def handle(stream: trio.SocketStream) -> None:
            conn = _Conn(stream, trio.CancelScope())
            procs.conns.add(conn)
            try:
                with conn.scope:
                    await serve(stream, procs.pod, port)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                procs.conns.discard(conn)
                await trio.aclose_forcefully(stream)

        return handle

    def reset(self, pod: Pod) -> int:
        """Crash the app: RST every open pod-side connection; returns how many."""
        procs = self._pods.get(pod.key)
        if procs is None:
            return 0
        conns = list(procs.conns)
        for conn in conns:
            abort(conn.stream)
            conn.scope.cancel()
        return len(conns)

    def stop(self, pod: Pod) -> None:
        """The pod is gone: connections reset, listeners closed."""
        procs = self._pods.get(pod.key)
        if procs is None or procs.pod is not pod:
            return
        self.reset(pod)
        procs.scope.cancel()
        del self._pods[pod.key]


# -- behaviours -----------------------------------------------------------------

async def _echo(stream: trio.SocketStream, pod: Pod, port: int) -> None:
    while data := await stream.receive_some(BUFSIZE):
        await stream.send_all(data)
    await stream.send_eof()


async def _http(stream: trio.SocketStream, pod: Pod, port: int) -> None:
    conn = h11.Connection(h11.SERVER)
    body = http_body(pod, port)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(BUFSIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            continue
        if isinstance(event, h11.Data):
            continue
        if isinstance(event, h11.EndOfMessage):
            headers = [("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(body)))]
            out = conn.send(h11.Response(status_code=200, headers=headers))
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            continue
        return  # ConnectionClosed, PAUSED or a protocol error: hang up


async def _blob(stream: trio.SocketStream, pod: Pod, port: int) -> None:
    buf = b""
    while b"\n" not in buf:
        data = await stream.receive_some(BUFSIZE)
        if not data or len(buf) > 64:
            await stream.send_all(b"ERR expected PUT <n> or GET <n>\n")
            return
        buf += data
    line, _, rest = buf.partition(b"\n")
    cmd, _, arg = line.decode("ascii", "replace").strip().partition(" ")
    if cmd == "GET" and arg.isdigit():
        await _blob_send(stream, int(arg))
    elif cmd == "PUT" and (arg.isdigit() or arg == ""):
        h = hashlib.sha256()
        remaining = int(arg) if arg else -1
        chunk = rest if remaining < 0 else rest[:remaining]
        while True:
            h.update(chunk)
            if remaining >= 0:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
            data = await stream.receive_some(min(BUFSIZE, remaining) if remaining > 0 else BUFSIZE)
            if not data:
                if remaining > 0:
                    await stream.send_all(b"ERR short upload\n")
                    return
                break
            chunk = data
        await stream.send_all(h.hexdigest().encode() + b"\n")
    else:
        await stream.send_all(b"ERR expected PUT <n> or GET <n>\n")
        return
    await stream.send_eof()


async def _blob_send(stream: trio.SocketStream, n: int) -> None:
    view = memoryview(BLOB_BLOCK)
    offset = 0
    while n > 0:
        size = min(n, BUFSIZE, len(view) - offset)
        await stream.send_all(view[offset : offset + size])
        n -= size
        offset = (offset + size) % len(view)
