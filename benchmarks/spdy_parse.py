"""The SPDY parser alone, in process: CPU time of ``SpdyConnection.receive_data``.

    python -m benchmarks.spdy_parse [--rounds N]

DATA frames of several sizes on one replied stream, fed in 256 KiB reads (frames
cut across reads as a socket cuts them); prints the best of ``--rounds`` as ns per
frame. No sockets and no scheduler, so differences between two trees show even on
a busy machine (run them alternately).
"""

from __future__ import annotations

import argparse
import time

from pfcompose.wire.spdy import DataReceived, SpdyConnection, data_frame_header

READ = 256 * 1024
CASES = ((512, 8 << 20), (32 * 1024, 64 << 20), (1 << 20, 128 << 20))
"""(frame payload, total bytes)."""


def best_time(frame: int, total: int, rounds: int) -> float:
    """Best CPU seconds to parse ``total`` bytes of ``frame``-byte DATA frames."""
    best = float("inf")
    for _ in range(rounds):
        client, server = SpdyConnection("client"), SpdyConnection("server")
        sid = client.open_stream({"streamtype": "data", "port": "80", "requestid": "0"})
        server.receive_data(client.data_to_send())
        server.reply(sid)
        client.receive_data(server.data_to_send())
        stream = (data_frame_header(sid, 0, frame) + b"x" * frame) * (total // frame)
        reads = [stream[i : i + READ] for i in range(0, len(stream), READ)]
        got = 0
        start = time.process_time()
        for data in reads:
            for event in client.receive_data(data):
                assert isinstance(event, DataReceived)
                got += len(event.data)
        best = min(best, time.process_time() - start)
        assert got == total // frame * frame
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    for frame, total in CASES:
        seconds = best_time(frame, total, args.rounds)
        print(f"DATA frames of {frame:>8} B: {seconds * 1e9 / (total // frame):8.0f} ns/frame")


if __name__ == "__main__":
    main()
