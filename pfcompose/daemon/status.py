"""What ``ps`` (and ``up -d``) show: one row per forward, as a table or JSON.

The daemon turns each :class:`~pfcompose.up.forward.ForwardStatus` into a plain JSON
record (:func:`status_record`); the CLI renders records. Keeping the record the unit
means ``ps --format json`` and the table can never disagree. The state words are
what the supervisor measured — a session that answers pings is ``ready``, one being
rebuilt is ``reconnecting n`` — not a probe of the local port.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # importing forward.py pulls in the kubernetes package: slow for `ps`
    from pfcompose.config import ForwardSpec
    from pfcompose.up.forward import ForwardStatus

__all__ = [
    "COLUMNS",
    "format_bytes",
    "format_duration",
    "gave_up",
    "health_text",
    "in_file_order",
    "is_ready",
    "not_ready_line",
    "render",
    "render_json",
    "render_plain",
    "render_rich",
    "state_text",
    "status_record",
    "status_records",
]

Record = dict[str, Any]

COLUMNS = (
    "NAME",
    "TARGET",
    "POD",
    "PORTS",
    "STATE",
    "HEALTH",
    "TRANSPORT",
    "CONNS",
    "IN",
    "OUT",
    "RECONNECTS",
    "UPTIME",
    "LAST ERROR",
)

_WAITING_STATES = ("reconnecting", "resolving", "connecting")


def state_text(status: ForwardStatus) -> str:
    """``ready``, ``reconnecting n``, ``waiting for pod``, ``failed: reason``, or the state."""
    state = str(status.state.value)
    if status.waiting_for_pod and state in _WAITING_STATES:
        return "waiting for pod"
    if state == "reconnecting":
        return f"reconnecting {status.attempt or status.reconnects}"
    if state == "failed":
        return f"failed: {status.detail or status.last_error or 'unknown error'}"
    return state


def target_text(spec: ForwardSpec | None) -> str:
    if spec is None:
        return ""
    if spec.target:
        return spec.target
    return f"selector {spec.selector}" if spec.selector else ""


def status_record(
    status: ForwardStatus, spec: ForwardSpec | None = None, *, now: float | None = None
) -> Record:
    """A JSON-safe record of one forward (the ``ps --format json`` element)."""
    now = time.time() if now is None else now
    uptime = None if status.ready_since is None else max(0.0, now - status.ready_since)
    return {
        "name": status.name,
        "target": target_text(spec),
        "namespace": status.namespace or (spec.namespace if spec else None),
        "pod": status.pod,
        "listening": [
            {"address": item.address, "local": item.local, "remote": item.remote}
            for item in status.listening
        ],
        "state": status.state.value,
        "status": state_text(status),
        "detail": status.detail,
        "transport": status.transport,
        "fallback": status.fallback,
        "connections_open": status.connections_open,
        "connections_total": status.connections_total,
        "checks_total": status.checks_total,
        "health": status.health,
        "health_detail": status.health_detail,
        "bytes_in": status.traffic.bytes_in,
        "bytes_out": status.traffic.bytes_out,
        "reconnects": status.reconnects,
        "last_error": status.last_error,
        "ready_since": status.ready_since,
        "uptime": None if uptime is None else round(uptime, 3),
        "started": status.started,
    }


# -- formatting pieces ---------------------------------------------------------------


def status_records(
    statuses: Iterable[ForwardStatus],
    specs: Mapping[str, ForwardSpec],
    names: Sequence[str] = (),
) -> list[Record]:
    """:func:`status_record` of each forward (only those named, if any), at one ``now``:
    what ``ps`` and ``wait`` answer, from the daemon or a foreground ``up``."""
    now = time.time()
    return [
        status_record(status, specs.get(status.name), now=now)
        for status in statuses
        if not names or status.name in names
    ]


def in_file_order(statuses: Iterable[ForwardStatus], order: Iterable[str]) -> list[ForwardStatus]:
    """``statuses`` in the order the file names the forwards (others last)."""
    rank = {name: index for index, name in enumerate(order)}
    return sorted(statuses, key=lambda s: rank.get(s.name, len(rank)))


def format_bytes(count: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB`` — binary units, as ``ls -h`` and ``du`` use."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """``42s``, ``5m12s``, ``2h03m``, ``3d04h``; ``-`` when there is none."""
    if seconds is None:
        return "-"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort`` (as config/listen.py): IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ports_text(record: Record) -> str:
    """``127.0.0.1:40123,[::1]:40123->5000``, one group per (local, remote) pair."""
    groups: dict[tuple[int, str], list[str]] = {}
    for item in record["listening"]:
        key = (item["local"], str(item["remote"]))
        groups.setdefault(key, []).append(join_host_port(item["address"], item["local"]))
    return " ".join(f"{','.join(hosts)}->{remote}" for (_, remote), hosts in groups.items())


def is_ready(record: Record) -> bool:
    """Ready, and healthy if it has a health check: what ``--wait``, ``wait`` and ``run`` need."""
    return bool(record["state"] == "ready" and record.get("health") in (None, "healthy"))


def gave_up(record: Record) -> bool:
    """Failed, or unhealthy: waiting longer will not make it ready (compose's ``--wait``)."""
    return bool(record["state"] == "failed" or record.get("health") == "unhealthy")


def not_ready_line(record: Record) -> str:
    """Why a forward is not ready (and healthy), in one line."""
    name = record["name"]
    if record["state"] == "ready" and record.get("health") not in (None, "healthy"):
        detail = record.get("health_detail") or ""
        return f"{name} is {record['health']}" + (f": {detail}" if detail else "")
    reason = record["status"]
    if record.get("last_error") and record["state"] != "failed":
        reason += f" (last error: {record['last_error']})"
    return f"{name} is not ready: {reason}"


def health_text(record: Record) -> str:
    """``healthy``, ``starting``, ``unhealthy: reason``; ``-`` without a health check."""
    health = record.get("health")
    if not health:
        return "-"
    detail = record.get("health_detail") or ""
    return f"{health}: {detail}" if health == "unhealthy" and detail else str(health)


def row(record: Record) -> list[str]:
    pod = record["pod"] or "-"
    if record["pod"] and record["namespace"]:
        pod = f"{record['namespace']}/{record['pod']}"
    return [
        record["name"],
        record["target"] or "-",
        pod,
        ports_text(record) or "-",
        record["status"],
        health_text(record),
        (record["transport"] or "-") + (" (fallback)" if record.get("fallback") else ""),
        f"{record['connections_open']}/{record['connections_total']}",
        format_bytes(record["bytes_in"]),
        format_bytes(record["bytes_out"]),
        str(record["reconnects"]),
        format_duration(record["uptime"]),
        record["last_error"] or "-",
    ]


# -- renderers -------------------------------------------------------------------------


def render_plain(records: Sequence[Record]) -> str:
    """Columns separated by at least three spaces, as ``docker ps`` prints; no colour."""
    rows = [list(COLUMNS), *(row(record) for record in records)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def render_json(records: Sequence[Record]) -> str:
    return json.dumps(list(records), indent=2) + "\n"


_STATE_STYLE = {"ready": "green", "failed": "red", "stopped": "dim"}


def render_rich(records: Sequence[Record], *, width: int | None = None) -> str:
    """A rich table, coloured by state (for a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for record in records:
        cells = row(record)
        style = _STATE_STYLE.get(record["state"], "yellow")
        cells[4] = f"[{style}]{cells[4]}[/{style}]"
        table.add_row(*cells)
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=width or 200).print(table)
    return buffer.getvalue()


def render(records: Sequence[Record], fmt: str, out: TextIO) -> None:
    """``fmt``: ``json``, ``table`` (rich on a TTY, plain otherwise) or ``plain``."""
    if fmt == "json":
        out.write(render_json(records))
    elif fmt == "table" and _is_tty(out):
        import shutil

        out.write(render_rich(records, width=shutil.get_terminal_size().columns))
    else:
        out.write(render_plain(records))
    out.flush()


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
