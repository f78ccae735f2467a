"""SPDY stream throughput next to a plain trio socket relay, two processes over loopback.

    python -m benchmarks.spdy_throughput [--bytes N] [--chunk N] [--frame N]

The parent is the client, a child process the server. Both measurements use the
same topology: the client pushes ``--bytes`` through one TCP connection (plain)
or one SPDY stream (client session → server session), the server reads
everything and answers with the byte count once it sees EOF. Rates are MB/s
(10**6 bytes) from the first byte sent to that answer.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import struct
import subprocess
import sys
import time

import trio

from pfcompose.wire.session import DEFAULT_READ_SIZE, SessionLost, open_session
from pfcompose.wire.sockio import tune_socket
from pfcompose.wire.spdy import DEFAULT_MAX_DATA_FRAME

READ_SIZE = DEFAULT_READ_SIZE
ANSWER = struct.Struct(">Qd")  # bytes received, server CPU seconds


async def _drain(stream: trio.abc.ReceiveStream) -> int:
    total = 0
    while chunk := await stream.receive_some(READ_SIZE):
        total += len(chunk)
    return total


async def _serve_connection(conn: trio.SocketStream, frame: int) -> None:
    tune_socket(conn)
    mode = await conn.receive_some(1)
    cpu = time.process_time()
    if mode == b"P":
        total = await _drain(conn)
        await conn.send_all(ANSWER.pack(total, time.process_time() - cpu))
        await conn.aclose()
        return
    async with open_session(conn, "server", max_data_frame=frame, read_size=READ_SIZE) as session:
        stream = await session.accept_stream()
        await stream.reply()
        total = await _drain(stream)
        await stream.send_all(ANSWER.pack(total, time.process_time() - cpu))
        with contextlib.suppress(SessionLost):  # the client may already be gone
            await stream.send_eof()
        await session.wait_closed()


async def serve(frame: int, connections: int) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    for _ in range(connections):
        conn = await listeners[0].accept()
        await _serve_connection(conn, frame)
    await listeners[0].aclose()


async def _push(stream: trio.abc.SendStream, total: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    left = total
    while left > 0:
        n = min(left, len(view))
        await stream.send_all(view[:n])
        left -= n


class Result:
    """One run: wall-clock rate and CPU seconds per GB on each side."""

    def __init__(self, total: int, elapsed: float, client_cpu: float, answer: bytes) -> None:
        received, server_cpu = ANSWER.unpack(answer)
        assert received == total, (received, total)
        self.rate = total / elapsed / 1e6
        self.client_cpu = client_cpu / total * 1e9
        self.server_cpu = server_cpu / total * 1e9


async def _receive_answer(stream: trio.abc.ReceiveStream) -> bytes:
    answer = b""
    while len(answer) < ANSWER.size:
        answer += await stream.receive_some(ANSWER.size - len(answer))
    return answer


async def measure_plain(port: int, total: int, chunk: bytes) -> Result:
    conn = await trio.open_tcp_stream("127.0.0.1", port)
    tune_socket(conn)
    cpu = time.process_time()
    start = time.perf_counter()
    await conn.send_all(b"P")
    await _push(conn, total, chunk)
    await conn.send_eof()
    answer = await _receive_answer(conn)
    result = Result(total, time.perf_counter() - start, time.process_time() - cpu, answer)
    await conn.aclose()
    return result


async def measure_spdy(port: int, total: int, chunk: bytes, frame: int) -> Result:
    conn = await trio.open_tcp_stream("127.0.0.1", port)
    tune_socket(conn)
    async with open_session(conn, "client", max_data_frame=frame, read_size=READ_SIZE) as session:
        cpu = time.process_time()
        start = time.perf_counter()
        await conn.send_all(b"S")
        stream = await session.open_stream({"streamType": "data", "port": "80", "requestID": "0"})
        await _push(stream, total, chunk)
        await stream.send_eof()
        answer = await _receive_answer(stream)
        result = Result(total, time.perf_counter() - start, time.process_time() - cpu, answer)
    return result


async def run(total: int, chunk_size: int, frame: int, repeat: int) -> None:
    command = [sys.executable, "-m", "benchmarks.spdy_throughput", "--serve"]
    command += ["--frame", str(frame), "--read", str(READ_SIZE), "--repeat", str(repeat)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    plain: list[Result] = []
    spdy: list[Result] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        chunk = bytes(range(256)) * (chunk_size // 256)
        for _ in range(repeat):  # alternate, so both see the same machine load
            plain.append(await measure_plain(port, total, chunk))
            spdy.append(await measure_spdy(port, total, chunk, frame))
    finally:
        child.wait(timeout=30)
    print(f"bytes={total} chunk={chunk_size} frame={frame} read={READ_SIZE} runs={repeat}")
    for name, results in (("plain trio socket relay", plain), ("SPDY stream", spdy)):
        rate = statistics.median(r.rate for r in results)
        runs = " ".join(f"{r.rate:.0f}" for r in results)
        cpu_c = statistics.median(r.client_cpu for r in results)
        cpu_s = statistics.median(r.server_cpu for r in results)
        print(
            f"{name + ':':25s}{rate:8.1f} MB/s median [{runs}]"
            f"  CPU s/GB: sender {cpu_c:.2f}, receiver {cpu_s:.2f}"
        )
    ratio = statistics.median(r.rate for r in spdy) / statistics.median(r.rate for r in plain)
    print(f"SPDY / plain: {ratio:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1 << 30)
    parser.add_argument("--chunk", type=int, default=1 << 20, help="client send_all size")
    parser.add_argument("--frame", type=int, default=DEFAULT_MAX_DATA_FRAME, help="DATA frame")
    parser.add_argument("--read", type=int, default=DEFAULT_READ_SIZE, help="socket read size")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global READ_SIZE
    READ_SIZE = args.read
    if args.serve:
        trio.run(serve, args.frame, 2 * args.repeat)
    else:
        trio.run(run, args.bytes, args.chunk, args.frame, args.repeat)


if __name__ == "__main__":
    main()
