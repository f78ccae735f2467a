"""The measuring clients: they talk to a local port (a forwarder's, or the pod's own).

* :func:`upload` / :func:`download` — one connection to a ``blob`` pod, sha256-verified.
* :func:`latency` — sequential connect, 1-byte echo, close against an ``echo`` pod.
* :func:`concurrency` — N parallel connections × ``size`` bytes echoed, every byte checked.

Throughput and latency use blocking sockets (the least client work per byte);
the download hashes in a helper thread so the client's sha256 (~390 MB/s on the
reference machine) overlaps with receiving instead of adding to it. Concurrency
uses trio. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import statistics
import threading
import time
from dataclasses import dataclass

import trio

HOST = "127.0.0.1"
CHUNK = 1 << 20
_BLOCK = b"".join(hashlib.sha256(b"pfcompose-blob:%d" % i).digest() for i in range(32768))
"""The blob pod's 1 MiB download period (docs/sandbox.md), rebuilt here on purpose."""


class BenchError(RuntimeError):
    """A measurement failed verification or ran out of time."""


def blob_sha256(n: int) -> str:
    h = hashlib.sha256()
    whole, rest = divmod(n, len(_BLOCK))
    for _ in range(whole):
        h.update(_BLOCK)
    h.update(_BLOCK[:rest])
    return h.hexdigest()


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_line(sock: socket.socket, limit: int = 256) -> bytes:
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        data = sock.recv(limit)
        if not data:
            break
        buf += data
    return buf


def upload(port: int, n: int, expected_sha: str, timeout: float) -> float:
    """``PUT n`` + the blob pattern; seconds until the pod's sha256 line matched."""
    view = memoryview(_BLOCK)
    start = time.perf_counter()
    with _connect(port, timeout) as sock:
        sock.sendall(b"PUT %d\n" % n)
        left = n
        while left > 0:
            size = min(left, len(view))
            sock.sendall(view[:size])
            left -= size
        answer = _read_line(sock).strip().decode(errors="replace")
    elapsed = time.perf_counter() - start
    if answer != expected_sha:
        raise BenchError(f"upload of {n} bytes: pod answered {answer!r}, expected the sha256")
    return elapsed


def download(port: int, n: int, expected_sha: str, timeout: float) -> float:
    """``GET n``; seconds until n bytes arrived, EOF seen and their sha256 matched."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
    h = hashlib.sha256()

    def hasher() -> None:
        while (chunk := chunks.get()) is not None:
            h.update(chunk)  # releases the GIL for large chunks

    thread = threading.Thread(target=hasher, name="sha256", daemon=True)
    thread.start()
    got = 0
    try:
        start = time.perf_counter()
        with _connect(port, timeout) as sock:
            sock.sendall(b"GET %d\n" % n)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(CHUNK)
                if not data:
                    break
                got += len(data)
                chunks.put(data, timeout=timeout)
    finally:
        chunks.put(None)
        thread.join(timeout)
    elapsed = time.perf_counter() - start
    if got != n:
        raise BenchError(f"download of {n} bytes: got {got}")
    if h.hexdigest() != expected_sha:
        raise BenchError(f"download of {n} bytes: sha256 mismatch")
    return elapsed


@dataclass
class Latency:
    rounds: int
    median_ms: float
    p99_ms: float
    mean_ms: float


def latency(port: int, rounds: int, time_limit: float) -> Latency:
    """Sequential rounds of connect, send 1 byte, read it back, close."""
    samples: list[float] = []
    deadline = time.monotonic() + time_limit
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        byte = bytes([65 + i % 26])
        start = time.perf_counter()
        with _connect(port, 10.0) as sock:
            sock.sendall(byte)
            answer = sock.recv(16)
        samples.append(time.perf_counter() - start)
        if answer != byte:
            raise BenchError(f"latency round {i}: echoed {answer!r}, expected {byte!r}")
    if len(samples) < rounds:
        raise BenchError(f"latency: only {len(samples)} of {rounds} rounds in {time_limit:.0f} s")
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Latency(len(samples), statistics.median(samples) * 1e3, p99 * 1e3,
                   statistics.fmean(samples) * 1e3)


@dataclass
class Concurrency:
    connections: int
    bytes_each: int
    seconds: float
    ok: int
    failed: int
    first_error: str


_PATTERN = os.urandom(1 << 20)


async def _echo_one(port: int, index: int, size: int, base: memoryview) -> None:
    """Send ``size`` bytes (a per-connection rotation of the pattern), check the echo."""
    offset = (index * 7919) % len(_PATTERN)
    expected = base[offset:offset + size]
    stream = await trio.open_tcp_stream(HOST, port)
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for pos in range(0, size, 256 * 1024):
                    await stream.send_all(expected[pos:pos + 256 * 1024])

            nursery.start_soon(send)
            got = 0
            while got < size:
                data = await stream.receive_some(256 * 1024)
                if not data:
                    raise BenchError(f"connection {index}: EOF after {got} of {size} bytes")
                if expected[got:got + len(data)] != data:
                    raise BenchError(f"connection {index}: wrong bytes at offset {got}")
                got += len(data)
    finally:
        await trio.aclose_forcefully(stream)


async def _concurrency(port: int, count: int, size: int, time_limit: float) -> Concurrency:
    ok = 0
    errors: list[str] = []
    base = memoryview(_PATTERN * (size // len(_PATTERN) + 2))  # shared by every connection

    async def one(i: int) -> None:
        nonlocal ok
        try:
            await _echo_one(port, i, size, base)
            ok += 1
        except Exception as exc:  # counted as lost; the first reason is reported
            cause: BaseException = exc
            while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
                cause = cause.exceptions[0]
            errors.append(f"{type(cause).__name__}: {cause}")

    start = trio.current_time()
    with trio.move_on_after(time_limit):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
    elapsed = trio.current_time() - start
    failed = count - ok
    if failed and not errors:
        errors.append(f"timed out after {time_limit:.0f} s")
    return Concurrency(count, size, elapsed, ok, failed, errors[0] if errors else "")


def concurrency(port: int, count: int, size: int, time_limit: float) -> Concurrency:
    return trio.run(_concurrency, port, count, size, time_limit)
