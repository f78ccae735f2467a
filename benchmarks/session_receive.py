"""The session's receive path alone, in process: CPU time of ``SpdySession._feed``.

    python -m benchmarks.session_receive [--rounds N]

What the reader task does with one socket read: the sans-IO parse plus the
driver's work per event (find the stream, buffer the chunk, wake its reader,
check its limit). DATA frames on one stream (one event per read: the parser's
cost) and round-robin over 64 streams (one event per frame: the driver's cost
per event), fed in 256 KiB reads to a session over a transport that discards
what it is sent; nothing is consumed (the limits are set out of reach). Prints
the best of ``--rounds`` as ns per frame. No sockets and no task switches, so
differences between two trees show even on a busy machine (run them alternately).
"""

from __future__ import annotations

import argparse
import time

import trio

from pfcompose.wire.session import SpdySession
from pfcompose.wire.spdy import SpdyConnection, data_frame_header

READ = 256 * 1024
CASES = ((1, 512, 8 << 20), (64, 512, 8 << 20), (64, 4096, 32 << 20))
"""(streams, frame payload, total bytes)."""


class _Sink(trio.abc.Stream):
    """A transport that takes every write and never has anything to read."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise AssertionError("not read")

    async def aclose(self) -> None:
        pass


async def _one_round(streams: int, frame: int, total: int) -> float:
    sink = _Sink()
    session = SpdySession(sink, "client", max_buffer=1 << 40, receive_budget=1 << 40)
    headers = [{"streamtype": "data", "port": "80", "requestid": str(i)} for i in range(streams)]
    opened = await session.open_streams(headers)
    peer = SpdyConnection("server")
    peer.receive_data(b"".join(sink.sent))
    for stream in opened:
        peer.reply(stream.stream_id)
    session._feed(peer.data_to_send())
    payload = b"x" * frame
    frames = [data_frame_header(s.stream_id, 0, frame) + payload for s in opened]
    count = total // frame
    wire = b"".join(frames[i % streams] for i in range(count))
    reads = [wire[i : i + READ] for i in range(0, len(wire), READ)]
    feed = session._feed
    start = time.process_time()
    for data in reads:
        feed(data)
    elapsed = time.process_time() - start
    got = sum(s.buffered_bytes for s in opened)
    assert got == count * frame, (got, count * frame)
    return elapsed


def best_time(streams: int, frame: int, total: int, rounds: int) -> float:
    """Best CPU seconds for the session to take ``total`` bytes of ``frame``-byte frames."""

    async def run() -> float:
        return min([await _one_round(streams, frame, total) for _ in range(rounds)])

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    for streams, frame, total in CASES:
        seconds = best_time(streams, frame, total, args.rounds)
        print(
            f"{streams:>3} stream(s), DATA frames of {frame:>5} B: "
            f"{seconds * 1e9 / (total // frame):8.0f} ns/frame"
        )


if __name__ == "__main__":
    main()
