"""Per-connection accounting turned into words and snapshots.

The counting itself happens in :mod:`pfcompose.up.connection`'s copy loops (plain int
adds into :class:`~pfcompose.up.connection.ConnStats` and the forward's
:class:`~pfcompose.up.connection.Traffic`). This module only reads those counters:
the one line an ended connection leaves in the event log, and the JSON snapshot
of a forward that the control channel pushes to ``pfcompose top`` and that the
metrics endpoint renders. Nothing here runs per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pfcompose.up.connection import LATENCY_BUCKETS, RESULTS

if TYPE_CHECKING:
    import trio

    from pfcompose.config.spec import ForwardSpec
    from pfcompose.up.forward import ForwardStatus

__all__ = [
    "closed_message",
    "format_seconds",
    "forward_snapshot",
    "healthy_of",
    "peer_of",
    "project_snapshot",
]

RECENT_IN_SNAPSHOT = 20
"""Ended connections per forward a pushed snapshot carries (``top``'s details view)."""


def peer_of(stream: trio.SocketStream) -> str:
    """``host:port`` of the local application (``[::1]:port`` for IPv6); ``?`` if gone."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "?"
    host, port = str(peer[0]), int(peer[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_seconds(seconds: float) -> str:
    """``850us``, ``12ms``, ``1.25s``, ``3m04s``: a duration at a glance."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def closed_message(record: Mapping[str, Any]) -> str:
    """``connection from 127.0.0.1:40312 to 8080 ended after 12ms: 5 B in, 5 B out; ok
    (local close)`` — the line ``logs --connections`` prints."""
    from pfcompose.daemon.status import format_bytes

    return (
        f"connection from {record['peer']} to {record['local']} ended after "
        f"{format_seconds(float(record['duration']))}: {format_bytes(int(record['bytes_in']))} in, "
        f"{format_bytes(int(record['bytes_out']))} out; {record['result']} ({record['reason']})"
    )


def healthy_of(status: ForwardStatus) -> bool | None:
    """The forward's health, if something (a health check) measures it; else None.

    The hook: a ``healthy`` attribute on the status (True/False), absent or None when
    no check is declared. Metrics and ``top`` show health only when it is known.
    """
    value = getattr(status, "healthy", None)
    return value if isinstance(value, bool) else None


def forward_snapshot(
    status: ForwardStatus, spec: ForwardSpec | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """``ps``'s record of a forward plus its connection accounting (JSON-safe)."""
    from pfcompose.daemon.status import status_record

    now = time.time() if now is None else now
    traffic = status.traffic
    record = status_record(status, spec, now=now)
    record.update(
        healthy=healthy_of(status),
        results={name: traffic.results.get(name, 0) for name in RESULTS},
        latency={
            "buckets": list(LATENCY_BUCKETS),
            "counts": list(traffic.latency),
            "sum": traffic.latency_sum,
        },
        session_seconds=0.0 if status.ready_since is None else max(0.0, now - status.ready_since),
        recent=list(traffic.recent)[-RECENT_IN_SNAPSHOT:],
    )
    return record


def project_snapshot(
    project: str,
    statuses: Iterable[ForwardStatus],
    specs: Mapping[str, ForwardSpec],
    names: Iterable[str] = (),
) -> dict[str, Any]:
    """What a ``subscribe`` push carries: the time and every (selected) forward."""
    now = time.time()
    wanted = set(names)
    return {
        "project": project,
        "time": now,
        "forwards": [
            forward_snapshot(status, specs.get(status.name), now=now)
            for status in statuses
            if not wanted or status.name in wanted
        ],
    }
