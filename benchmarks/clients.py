"""The measuring clients: they talk to a local port (a forwarder's, or the pod's own).

* :func:`upload` / :func:`download` — one connection to a ``blob`` pod, every byte verified.
* :func:`latency` — sequential connect, 1-byte echo, close against an ``echo`` pod.
* :func:`concurrency` — N parallel connections × ``size`` bytes echoed, every byte checked.

Throughput verification (``verify``): ``"pattern"`` (default) is byte-exact — the
upload is ``VERIFY <n>`` (the pod compares each byte with the known pattern and
answers ``ok <n>`` or ``mismatch at <offset>``), the download is compared here
with ``memcmp`` as it arrives. That is stronger than comparing digests and costs
~0.05 CPU-s/GiB on either side, so neither the pod nor this client caps the rate.
``"sha256"`` is the old way: ``PUT <n>`` answered by the pod's sha256, downloads
hashed here in a helper thread (sha256 runs at ~390 MB/s on the reference
machine: it capped both directions). Throughput and latency use blocking sockets;
concurrency uses trio. Every loop is bounded by a count and a deadline.
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
from typing import Literal

import trio

HOST = "127.0.0.1"
CHUNK = 1 << 20
_BLOCK = b"".join(hashlib.sha256(b"pfcompose-blob:%d" % i).digest() for i in range(32768))
"""The blob pod's 1 MiB download period (docs/sandbox.md), rebuilt here on purpose."""
_WINDOW = _BLOCK * 2
"""Two periods: a slice of up to one period at any phase is contiguous here."""

Verify = Literal["pattern", "sha256"]
VERIFY_MODES: tuple[Verify, ...] = ("pattern", "sha256")


class BenchError(RuntimeError):
    """A measurement failed verification or ran out of time."""


def blob_sha256(n: int) -> str:
    h = hashlib.sha256()
    whole, rest = divmod(n, len(_BLOCK))
    for _ in range(whole):
        h.update(_BLOCK)
    h.update(_BLOCK[:rest])
    return h.hexdigest()


def pattern_mismatch(data: bytes | bytearray | memoryview, offset: int) -> int | None:
    """Index in ``data`` of the first byte that differs from the pattern at ``offset``.

    ``bytes.startswith`` at a position is a ``memcmp`` with no copy (~20 GB/s).
    """
    view = memoryview(data)
    period = len(_BLOCK)
    for start in range(0, len(view), period):
        piece = view[start:start + period]
        phase = (offset + start) % period
        if not _WINDOW.startswith(piece, phase):
            return start + next(i for i in range(len(piece)) if piece[i] != _WINDOW[phase + i])
    return None


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


def upload(port: int, n: int, timeout: float, verify: Verify = "pattern",
           expected_sha: str | None = None) -> float:
    """Send n bytes of the pattern; seconds until the pod confirmed them.

    ``pattern``: ``VERIFY n``, the answer must be ``ok n``. ``sha256``: ``PUT n``,
    the answer must be ``expected_sha`` (default: computed here, before timing).
    """
    if verify == "sha256" and expected_sha is None:
        expected_sha = blob_sha256(n)
    command, expected = ((b"VERIFY %d\n" % n, f"ok {n}") if verify == "pattern"
                         else (b"PUT %d\n" % n, expected_sha))
    view = memoryview(_BLOCK)
    start = time.perf_counter()
    with _connect(port, timeout) as sock:
        sock.sendall(command)
        left = n
        while left > 0:
            size = min(left, len(view))
            sock.sendall(view[:size])
            left -= size
        answer = _read_line(sock).strip().decode(errors="replace")
    elapsed = time.perf_counter() - start
    if answer != expected:
        raise BenchError(f"upload of {n} bytes: pod answered {answer!r}, expected {expected!r}")
    return elapsed


def download(port: int, n: int, timeout: float, verify: Verify = "pattern",
             expected_sha: str | None = None) -> float:
    """``GET n``; seconds until n bytes arrived, EOF seen and every byte verified."""
    if verify == "sha256":
        return _download_sha256(port, n, timeout, expected_sha or blob_sha256(n))
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got = 0
    start = time.perf_counter()
    with _connect(port, timeout) as sock:
        sock.sendall(b"GET %d\n" % n)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            k = sock.recv_into(buf)
            if not k:
                break
            if got + k > n:
                raise BenchError(f"download of {n} bytes: got more than {n}")
            at = pattern_mismatch(view[:k], got)
            if at is not None:
                raise BenchError(f"download of {n} bytes: wrong byte at offset {got + at}")
            got += k
    elapsed = time.perf_counter() - start
    if got != n:
        raise BenchError(f"download of {n} bytes: got {got}")
    return elapsed


def _download_sha256(port: int, n: int, timeout: float, expected_sha: str) -> float:
    """The sha256 way: hashed in a helper thread, overlapping the receive."""
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
