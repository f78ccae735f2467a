"""The pods' processes: a real TCP listener on loopback for every served pod port.

Each served port's process is reachable two ways: the kubelet's "dial
localhost:PORT in the pod's network namespace" is :meth:`Backends.connect`, an
in-process connection (``pipe.py``: no loopback hop inside the sandbox), and
:meth:`Backends.address` is a real listener on loopback for everyone else (the
benchmark's ``direct`` client, tests). Both run the same behaviour code:

* ``echo`` – sends back what it receives; answers EOF with EOF.
* ``http`` – answers every HTTP/1.1 request with 200 and a body naming pod,
  namespace and port (what a curl demo shows).
* ``blob`` – the benchmark target; a one-line command, then raw bytes:
  ``PUT <n>\\n`` + n bytes (or ``PUT\\n`` + bytes until EOF) → ``<sha256 hex>\\n``, close;
  ``VERIFY <n>\\n`` + n bytes → ``ok <n>\\n`` when they are exactly :func:`blob_bytes`,
  else ``mismatch at <offset>\\n`` (the first differing byte), close;
  ``GET <n>\\n`` → n bytes of :func:`blob_bytes`, close.
* ``target: HOST:PORT`` – no listener here: the kubelet dials that address itself.
* ``none`` – nothing listens; the port refuses, as a closed port in a pod does.

An *app fault* (:meth:`Backends.set_app_fault`, for health-check tests) overrides a
served port's behaviour while it is set: ``refuse`` (the process stopped listening:
the kubelet's dial is refused), ``error`` (every HTTP request is answered 500) or
``hang`` (connections are accepted, read and never answered).

The data paths read up to 1 MiB at a time and never touch single bytes. ``VERIFY``
compares with ``memcmp`` (``bytes.startswith`` at an offset, ~20 GB/s) where ``PUT``
hashes (sha256, ~390 MB/s without SHA extensions): a benchmark that verifies with
it measures the forwarder, not the pod's hashing.
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

from pfcompose.sandbox.pipe import PipeStream, pipe_pair
from pfcompose.sandbox.state import Behaviour, Pod

__all__ = [
    "APP_FAULTS",
    "BLOB_BLOCK",
    "Backends",
    "blob_bytes",
    "blob_mismatch",
    "blob_sha256",
    "http_body",
]

BUFSIZE = 1024 * 1024
_BLOCK_HASHES = 32768  # 32 768 × 32 bytes = 1 MiB


def _make_block() -> bytes:
    return b"".join(hashlib.sha256(b"pfcompose-blob:%d" % i).digest() for i in range(_BLOCK_HASHES))


BLOB_BLOCK = _make_block()
"""The 1 MiB period of ``blob``'s download data: sha256(b"pfcompose-blob:<i>") for i = 0, 1, …"""


_BLOB_WINDOW = BLOB_BLOCK * 2
"""Two periods: any slice of up to one period, at any phase, is contiguous here."""


def blob_mismatch(data: bytes | bytearray | memoryview, offset: int) -> int | None:
    """Where ``data`` first differs from :func:`blob_bytes` at ``offset``; None: it matches.

    ``bytes.startswith`` at a position is a ``memcmp`` against the pattern, with no
    copy (memoryview ``==`` compares item by item at ~270 MB/s).
    """
    view = memoryview(data)
    period = len(BLOB_BLOCK)
    for start in range(0, len(view), period):
        piece = view[start : start + period]
        phase = (offset + start) % period
        if not _BLOB_WINDOW.startswith(piece, phase):
            return start + next(i for i in range(len(piece)) if piece[i] != _BLOB_WINDOW[phase + i])
    return None


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


APP_FAULTS = ("refuse", "error", "hang")
"""What :meth:`Backends.set_app_fault` can make a pod port do (``none`` clears it)."""

Conn = trio.SocketStream | PipeStream
"""A pod process's side of one connection."""


def abort(stream: Conn) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER 0): the app crashed."""
    if isinstance(stream, PipeStream):
        stream.abort()
        return
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(eq=False)
class _Conn:
    stream: Conn
    scope: trio.CancelScope


@dataclass
class _PodProcesses:
    pod: Pod
    scope: trio.CancelScope
    nursery: trio.Nursery | None = None
    addresses: dict[int, tuple[str, int]] = field(default_factory=dict)
    handlers: dict[int, Callable[[Conn], Awaitable[None]]] = field(default_factory=dict)
    conns: set[_Conn] = field(default_factory=set)


class Backends:
    """Starts, stops and crashes the pods' listeners; all tasks live in one nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._pods: dict[tuple[str, str], _PodProcesses] = {}
        self._app_faults: dict[tuple[str, str, int], str] = {}

    def set_app_fault(self, pod: Pod, port: int, fault: str | None) -> None:
        """Make ``pod``'s ``port`` refuse, answer 500 or hang (None/``none``: behave again)."""
        key = (pod.namespace, pod.name, port)
        if fault in (None, "none"):
            self._app_faults.pop(key, None)
            return
        if fault not in APP_FAULTS:
            raise ValueError(
                f"'fault' must be one of {', '.join(APP_FAULTS)} or none, not {fault!r}"
            )
        if pod.port(port) is None:
            raise LookupError(f"pod {pod.name} has no TCP port {port}")
        self._app_faults[key] = fault

    def app_fault(self, pod: Pod, port: int) -> str | None:
        return self._app_faults.get((pod.namespace, pod.name, port))

    def address(self, pod: Pod, port: int) -> tuple[str, int] | None:
        """Where the kubelet connects for ``pod``'s ``port``; None: nothing listens."""
        cp = pod.port(port)
        if cp is None or self.app_fault(pod, port) == "refuse":
            return None
        if cp.serve.kind == "target":
            return (cp.serve.host, cp.serve.port)
        procs = self._pods.get(pod.key)
        if procs is None or procs.pod is not pod:
            return None
        return procs.addresses.get(port)

    def connect(self, pod: Pod, port: int) -> PipeStream | None:
        """The kubelet's connection to ``pod``'s process on ``port``, in process.

        None when no process of this sandbox serves it: ``target:`` ports (dial
        :meth:`address`) and ports nothing listens on (refused).
        """
        procs = self._pods.get(pod.key)
        if procs is None or procs.pod is not pod or procs.nursery is None:
            return None
        if self.app_fault(pod, port) == "refuse":
            return None
        handler = procs.handlers.get(port)
        if handler is None:
            return None
        ours, theirs = pipe_pair()
        procs.nursery.start_soon(handler, theirs)
        return ours

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
                procs.nursery = nursery
                for cp in pod.ports:
                    if cp.serve.kind in ("none", "target") or cp.protocol != "TCP":
                        continue
                    if cp.container_port in procs.addresses:
                        continue
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    sockname = listeners[0].socket.getsockname()
                    procs.addresses[cp.container_port] = ("127.0.0.1", int(sockname[1]))
                    handler = self._handler(procs, cp.serve, cp.container_port)
                    procs.handlers[cp.container_port] = handler
                    nursery.start_soon(trio.serve_listeners, handler, listeners)
                task_status.started(procs)

    def _handler(
        self, procs: _PodProcesses, behaviour: Behaviour, port: int
    ) -> Callable[[Conn], Awaitable[None]]:
        serve = {"echo": _echo, "http": _http, "blob": _blob}[behaviour.kind]

        async def handle(stream: Conn) -> None:
            conn = _Conn(stream, trio.CancelScope())
            procs.conns.add(conn)
            try:
                with conn.scope:
                    fault = self.app_fault(procs.pod, port)
                    if fault == "refuse":  # a real listener: the app stopped listening
                        abort(stream)
                    elif fault == "hang":
                        await _hang(stream)
                    elif fault == "error" and behaviour.kind == "http":
                        await _http(stream, procs.pod, port, status=500)
                    else:
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


async def _echo(stream: Conn, pod: Pod, port: int) -> None:
    while data := await stream.receive_some(BUFSIZE):
        await stream.send_all(data)
    await stream.send_eof()


async def _hang(stream: Conn) -> None:
    """Accept, read and never answer: a wedged app (its kernel still ACKs)."""
    while await stream.receive_some(BUFSIZE):
        pass
    await trio.sleep_forever()  # even after the client's FIN: no answer, no close


async def _http(stream: Conn, pod: Pod, port: int, *, status: int = 200) -> None:
    conn = h11.Connection(h11.SERVER)
    body = http_body(pod, port) if status == 200 else b"internal error (sandbox app fault)\n"
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            # not HTTP (a tcp check, a stray client): answer 400 as a web server does
            # and hang up; never let it crash the sandbox (and ``up --sandbox``)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                bad = [("Content-Length", "0"), ("Connection", "close")]
                await stream.send_all(conn.send(h11.Response(status_code=400, headers=bad)) or b"")
            return
        if event is h11.NEED_DATA:
            data = await stream.receive_some(BUFSIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            continue
        if isinstance(event, h11.Data):
            continue
        if isinstance(event, h11.EndOfMessage):
            headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ]
            out = conn.send(h11.Response(status_code=status, headers=headers))
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            continue
        return  # ConnectionClosed, PAUSED or a protocol error: hang up


_BLOB_USAGE = b"ERR expected PUT <n>, VERIFY <n> or GET <n>\n"


async def _blob(stream: Conn, pod: Pod, port: int) -> None:
    buf = b""
    while b"\n" not in buf:
        data = await stream.receive_some(BUFSIZE)
        if not data or len(buf) > 64:
            await stream.send_all(_BLOB_USAGE)
            return
        buf += data
    line, _, rest = buf.partition(b"\n")
    cmd, _, arg = line.decode("ascii", "replace").strip().partition(" ")
    if cmd == "GET" and arg.isdigit():
        await _blob_send(stream, int(arg))
    elif cmd == "PUT" and (arg.isdigit() or arg == ""):
        h = hashlib.sha256()

        def update(chunk: bytes, offset: int) -> None:
            h.update(chunk)

        if await _blob_receive(stream, int(arg) if arg else -1, rest, update) is None:
            return
        await stream.send_all(h.hexdigest().encode() + b"\n")
    elif cmd == "VERIFY" and arg.isdigit():
        first_difference: int | None = None

        def check(chunk: bytes, offset: int) -> None:
            nonlocal first_difference
            if first_difference is None:
                at = blob_mismatch(chunk, offset)
                if at is not None:
                    first_difference = offset + at

        n = await _blob_receive(stream, int(arg), rest, check)
        if n is None:
            return
        reply = f"ok {n}" if first_difference is None else f"mismatch at {first_difference}"
        await stream.send_all(reply.encode() + b"\n")
    else:
        await stream.send_all(_BLOB_USAGE)
        return
    await stream.send_eof()


async def _blob_receive(
    stream: Conn, n: int, rest: bytes, consume: Callable[[bytes, int], None]
) -> int | None:
    """Feed ``n`` bytes (``-1``: until EOF) to ``consume(chunk, offset)``; the count, or
    None after answering a short upload. Reads stay ≤ ``n``: nothing is over-read."""
    got = 0
    chunk = rest if n < 0 else rest[:n]
    while True:
        if chunk:
            consume(chunk, got)
            got += len(chunk)
        if 0 <= n <= got:
            return got
        data = await stream.receive_some(min(BUFSIZE, n - got) if n >= 0 else BUFSIZE)
        if not data:
            if n >= 0:
                await stream.send_all(b"ERR short upload\n")
                return None
            return got
        chunk = data


async def _blob_send(stream: Conn, n: int) -> None:
    view = memoryview(BLOB_BLOCK)
    offset = 0
    while n > 0:
        size = min(n, BUFSIZE, len(view) - offset)
        await stream.send_all(view[offset : offset + size])
        n -= size
        offset = (offset + size) % len(view)
