"""Prometheus metrics of a running project: text exposition over a small trio + h11 server.

``metrics: {listen: 127.0.0.1:9464}`` in the file (or ``up --metrics ADDR``) serves
``GET /metrics`` from the supervisor's own counters — the same ones ``ps`` and
``top`` show, rendered at scrape time (:func:`render`). Nothing is sampled or
stored for it, so a forwarder nobody scrapes pays nothing.

Names follow Prometheus conventions (``_total`` counters, base units: seconds and
bytes, one ``forward`` label plus ``project``); ``pfcompose_forward_healthy`` is
present only for forwards whose health is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import h11
import trio

from pfcompose.config.metricsconf import split_listen
from pfcompose.platform.sockets import reuse_address

__all__ = ["CONTENT_TYPE", "bind_metrics", "listener_url", "render", "serve_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 16 * 1024
"""Bytes of request head accepted; a client sending more is cut off."""
REQUEST_TIMEOUT = 10.0

Snapshot = Callable[[], Mapping[str, Any]]
"""Returns :func:`pfcompose.up.connstats.project_snapshot`'s dict, on the trio thread."""

_UP_STATES = ("starting", "resolving", "connecting", "ready", "reconnecting")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[str] = []

    def add(self, labels: Mapping[str, str], value: float, suffix: str = "") -> None:
        self.samples.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")

    def lines(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self.samples]


def render(snapshot: Mapping[str, Any]) -> str:
    """The text exposition of one project snapshot (format 0.0.4)."""
    project = str(snapshot.get("project", ""))
    families = {
        "up": _Family(
            "pfcompose_forward_up", "gauge", "1 while the forward runs (listening, not failed)."
        ),
        "ready": _Family(
            "pfcompose_forward_ready", "gauge", "1 while the forward has a live link to a pod."
        ),
        "healthy": _Family(
            "pfcompose_forward_healthy",
            "gauge",
            "1 if the forward's health check passes, 0 if it fails (only where declared).",
        ),
        "open": _Family(
            "pfcompose_forward_connections_open", "gauge", "Local connections being carried now."
        ),
        "total": _Family(
            "pfcompose_forward_connections_total",
            "counter",
            "Ended connections by result: ok, refused (pod port), reset (by the pod), error.",
        ),
        "bytes": _Family(
            "pfcompose_forward_bytes_total",
            "counter",
            "Bytes carried; direction in = pod to local, out = local to pod.",
        ),
        "reconnects": _Family(
            "pfcompose_forward_reconnects_total", "counter", "Times the link to a pod was rebuilt."
        ),
        "session": _Family(
            "pfcompose_forward_session_seconds",
            "gauge",
            "Seconds the current link to a pod has been up (0 when not ready).",
        ),
        "latency": _Family(
            "pfcompose_forward_connect_latency_seconds",
            "histogram",
            "Seconds from accepting a local connection to its streams to the pod being open.",
        ),
    }
    for record in snapshot.get("forwards", ()):
        base = {"project": project, "forward": str(record["name"])}
        state = str(record["state"])
        families["up"].add(base, 1 if state in _UP_STATES and record["listening"] else 0)
        families["ready"].add(base, 1 if state == "ready" else 0)
        if record.get("healthy") is not None:
            families["healthy"].add(base, 1 if record["healthy"] else 0)
        families["open"].add(base, int(record["connections_open"]))
        for result, count in record["results"].items():
            families["total"].add({**base, "result": result}, int(count))
        families["bytes"].add({**base, "direction": "in"}, int(record["bytes_in"]))
        families["bytes"].add({**base, "direction": "out"}, int(record["bytes_out"]))
        families["reconnects"].add(base, int(record["reconnects"]))
        families["session"].add(base, float(record["session_seconds"]))
        _histogram(families["latency"], base, record["latency"])
    lines: list[str] = []
    for family in families.values():
        if family.samples:  # no forward declares health: no healthy family at all
            lines.extend(family.lines())
    return "\n".join(lines) + "\n"


def _histogram(family: _Family, base: Mapping[str, str], latency: Mapping[str, Any]) -> None:
    cumulative = 0
    counts = list(latency["counts"])
    for bound, count in zip(latency["buckets"], counts, strict=False):
        cumulative += int(count)
        family.add({**base, "le": _number(float(bound))}, cumulative, "_bucket")
    cumulative += int(counts[-1])
    family.add({**base, "le": "+Inf"}, cumulative, "_bucket")
    family.add(base, float(latency["sum"]), "_sum")
    family.add(base, cumulative, "_count")


# -- the server ------------------------------------------------------------------------------


async def bind_metrics(listen: str) -> trio.SocketListener:
    """Bind ``host:port`` (as :func:`~pfcompose.config.metricsconf.parse_metrics_listen`
    normalised it); OSError if it cannot be."""
    host, port = split_listen(listen)
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        reuse_address(sock)  # SO_REUSEADDR, except on Windows
        await sock.bind((host, port))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def listener_url(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


async def serve_metrics(listener: trio.SocketListener, snapshot: Snapshot) -> None:
    """Answer scrapes on ``listener`` until cancelled."""
    async with trio.open_nursery() as nursery, listener:
        while True:
            stream = await listener.accept()
            nursery.start_soon(_serve_one, stream, snapshot)


async def _serve_one(stream: trio.SocketStream, snapshot: Snapshot) -> None:
    """One request per connection (``Connection: close``): scrapers reconnect anyway."""
    async with stream:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                request = await _read_request(stream, conn)
                if request is None:
                    return
                status, body, content_type = _respond(request, snapshot)
                headers = [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ]
                data = conn.send(h11.Response(status_code=status, headers=headers))
                if request.method != b"HEAD":
                    data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
                data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
                await stream.send_all(data)
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(MAX_REQUEST))
            continue
        if isinstance(event, h11.Request):
            return event
        return None


def _respond(request: h11.Request, snapshot: Snapshot) -> tuple[int, bytes, str]:
    target = request.target.split(b"?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        return 405, b"only GET\n", "text/plain; charset=utf-8"
    if target == b"/metrics":
        return 200, render(snapshot()).encode(), CONTENT_TYPE
    if target == b"/":
        return 200, b"pfcompose metrics: /metrics\n", "text/plain; charset=utf-8"
    return 404, b"not found; metrics are at /metrics\n", "text/plain; charset=utf-8"
