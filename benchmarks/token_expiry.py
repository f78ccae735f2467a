"""Credentials that lapse every few seconds, under load: zero failed connections.

    python -m benchmarks.token_expiry [--duration 120] [--ttl 5] [--interval 0.1]
                                      [--transports websocket,auto] [--bulk 8MiB] [--json]

A sandbox (``pfcompose sandbox --token-ttl TTL``) accepts only tokens it minted,
each living ``--ttl`` seconds; its kubeconfig's user is the exec plugin
``python -m pfcompose.sandbox.execplugin``. ``pfcompose up`` runs one forward per
transport to an echo+blob pod. For ``--duration`` seconds, per forward, a new
connection opens every ``--interval`` seconds (64 bytes echoed and checked) while
a bulk loop downloads ``--bulk`` bytes after bulk, every byte verified. Counted:
connections that failed (any error, short or wrong answer), bulk transfers, the
plugin's runs (tokens the sandbox minted), requests the sandbox refused as
expired, and pfcompose's own connection errors (from its ``--json`` events).

``websocket`` dials the API server per connection, so it renews the token on
the way; the SPDY transports keep one session whose token may lapse without
harm (a session is authenticated once, when it opens).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio

from benchmarks import procs
from benchmarks.clients import BenchError, download

STATE: dict[str, Any] = {"pods": [{"name": "echo", "labels": {"app": "echo"}, "ports": [
    {"containerPort": 5000, "name": "echo", "serve": "echo"},
    {"containerPort": 9000, "name": "blob", "serve": "blob"},
]}]}
PAYLOAD = b"pfcompose-token-expiry-" + b"x" * 41  # 64 bytes
TRANSPORTS = ("auto", "spdy", "spdy-over-websocket", "websocket")


def parse_size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.token_expiry",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load (120)")
    p.add_argument("--ttl", type=float, default=5.0, help="token lifetime, seconds (5)")
    p.add_argument("--interval", type=float, default=0.1,
                   help="seconds between new connections, per forward (0.1)")
    p.add_argument("--transports", default="websocket,auto",
                   help=f"comma-separated, of {', '.join(TRANSPORTS)} (websocket,auto)")
    p.add_argument("--bulk", default="8MiB", help="bytes per bulk download (8MiB; 0: none)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.failures: list[str] = []
        self.bulk_ok = 0
        self.bulk_bytes = 0
        self.bulk_failed = 0
        self.latencies: list[float] = []

    def fail(self, why: str) -> None:
        self.failed += 1
        if len(self.failures) < 10:
            self.failures.append(why)


async def one_connection(port: int, tally: Tally) -> None:
    """Connect, echo 64 bytes, check them, close (no half-close: every transport)."""
    start = trio.current_time()
    try:
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(PAYLOAD)
                got = b""
                while len(got) < len(PAYLOAD):
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    got += data
        if got != PAYLOAD:
            tally.fail(f"echo answered {len(got)} bytes, not the 64 sent")
        else:
            tally.ok += 1
            tally.latencies.append(trio.current_time() - start)
    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
        tally.fail(f"{type(exc).__name__}: {exc}")


async def connections(port: int, duration: float, interval: float, tally: Tally) -> None:
    deadline = trio.current_time() + duration
    async with trio.open_nursery() as nursery:
        tick = trio.current_time()
        while tick < deadline:
            nursery.start_soon(one_connection, port, tally)
            tick += interval
            await trio.sleep_until(tick)


async def bulk(port: int, size: int, duration: float, tally: Tally) -> None:
    deadline = time.monotonic() + duration
    while size and time.monotonic() < deadline:
        try:
            await trio.to_thread.run_sync(download, port, size, 60.0)
            tally.bulk_ok += 1
            tally.bulk_bytes += size
        except (BenchError, OSError) as exc:
            tally.bulk_failed += 1
            tally.fail(f"bulk: {exc}")


def sandbox_auth(url: str) -> dict[str, Any]:
    """``GET /_sandbox/auth`` with a token of its own (the admin API wants one too)."""
    mint = urllib.request.Request(url + "/_sandbox/tokens", data=b"{}", method="POST")
    with urllib.request.urlopen(mint, timeout=10) as resp:
        token = json.loads(resp.read())["token"]
    ask = urllib.request.Request(url + "/_sandbox/auth",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(ask, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    answer["mints"] -= 1  # this very request's token
    answer.pop("requests", None)
    return answer


def pfcompose_errors(out: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("kind")
            if kind in ("connection_error", "error"):
                counts[kind] = counts.get(kind, 0) + 1
            if kind == "state" and ev.get("state") == "reconnecting":
                counts["reconnecting"] = counts.get("reconnecting", 0) + 1
    return counts


async def load(ports: dict[str, tuple[int, int]], args: argparse.Namespace,
               tallies: dict[str, Tally]) -> None:
    size = parse_size(args.bulk)
    async with trio.open_nursery() as nursery:
        for name, (echo, blob) in ports.items():
            nursery.start_soon(connections, echo, args.duration, args.interval, tallies[name])
            nursery.start_soon(bulk, blob, size, args.duration, tallies[name])


def run(args: argparse.Namespace) -> dict[str, Any]:
    transports = [t for t in args.transports.split(",") if t]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown or not transports:
        raise SystemExit(f"--transports: known are {', '.join(TRANSPORTS)}")
    with tempfile.TemporaryDirectory(prefix="pfcompose-bench-tokens-") as tmp:
        workdir = Path(tmp)
        sandbox, info = procs.start_sandbox(STATE, workdir, extra=["--token-ttl", str(args.ttl)])
        with sandbox:
            forwards = {t.replace("-", "_"): {"target": "pod/echo", "ports": [":5000", ":9000"],
                                              "transport": t} for t in transports}
            before = sandbox_auth(info.url)
            up = procs.start_pfcompose(info, forwards, workdir, name="pfcompose")
            with up:
                started = sandbox_auth(info.url)
                ports = {n: (p, p2) for n in forwards for p, p2 in [_ports(up, n)]}
                tallies = {n: Tally() for n in forwards}
                t0 = time.monotonic()
                trio.run(load, ports, args, tallies)
                elapsed = time.monotonic() - t0
                after = sandbox_auth(info.url)
                errors = pfcompose_errors(up.output())
    return {
        "duration": round(elapsed, 1), "ttl": args.ttl, "interval": args.interval,
        "bulk": parse_size(args.bulk),
        "plugin_runs": after["mints"] - before["mints"],
        "plugin_runs_during_load": after["mints"] - started["mints"],
        "expired_refused": after["expiredRejected"] - before["expiredRejected"],
        "refused": after["rejected"] - before["rejected"],
        "pfcompose_events": errors,
        "forwards": {n: {"connections_ok": t.ok, "connections_failed": t.failed,
                         "bulk_transfers": t.bulk_ok, "bulk_failed": t.bulk_failed,
                         "bulk_mb_s": round(t.bulk_bytes / 1e6 / elapsed, 1),
                         **_latency(t.latencies),
                         "failures": t.failures} for n, t in tallies.items()},
    }


def _latency(values: list[float]) -> dict[str, float]:
    """Connect-to-echo times (ms): median, p99, max — a renewal that blocks shows here."""
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {"echo_ms_median": pick(0.5), "echo_ms_p99": pick(0.99),
            "echo_ms_max": round(ordered[-1] * 1000, 1)}


def _ports(up: procs.Proc, name: str) -> tuple[int, int]:
    """(echo, blob) local ports of forward ``name`` from pfcompose's --json events."""
    found: dict[int, int] = {}
    for line in up.output().splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            if ev.get("kind") == "listening" and ev.get("forward") == name:
                found[int(ev["remote"])] = int(ev["local"])
    return found[5000], found[9000]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: procs.stop_all())
    result = run(args)
    failed = sum(f["connections_failed"] for f in result["forwards"].values())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['duration']} s, tokens live {args.ttl:g} s: "
              f"plugin ran {result['plugin_runs']} times "
              f"({result['plugin_runs_during_load']} during the load), "
              f"{result['expired_refused']} requests refused as expired; "
              f"pfcompose events {result['pfcompose_events'] or '{}'}")
        for name, f in result["forwards"].items():
            print(f"  {name}: {f['connections_ok']} connections ok, "
                  f"{f['connections_failed']} failed; {f['bulk_transfers']} bulk transfers "
                  f"({f['bulk_mb_s']} MB/s), {f['bulk_failed']} failed; echo ms median "
                  f"{f.get('echo_ms_median')}, p99 {f.get('echo_ms_p99')}, "
                  f"max {f.get('echo_ms_max')}")
            for why in f["failures"]:
                print(f"    {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
