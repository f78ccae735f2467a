"""``pfcompose top``: a live view of a running project, fed by pushed snapshots.

The supervisor (daemon, or a foreground ``up``) pushes every forward's counters over
the control channel (``subscribe``); this module keeps a minute of them per forward
to show rates and a sparkline, and draws with rich's :class:`~rich.live.Live`.
Nothing here polls: a frame is drawn when a snapshot arrives or a key is pressed,
at most :data:`MAX_FPS` times a second.

Why rich's Live and not textual: rich is already a dependency (``ps`` uses it) and
Live is one small, well-kept object; textual would add a framework (its own event
loop on asyncio, CSS, ~10 MiB) for a single table, a details panel and four keys.
Keys are read raw from the terminal in cbreak mode, in the trio loop.

Not a terminal: one line per forward per snapshot (``--json``: one JSON object).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import trio

from pfcompose.daemon.status import format_bytes, ports_text
from pfcompose.up.connstats import format_seconds

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pfcompose.daemon.control import ControlClient, ProjectPaths

__all__ = [
    "MAX_FPS",
    "ForwardView",
    "TopModel",
    "connect_project",
    "plain_lines",
    "render_screen",
    "run_plain",
    "run_tty",
    "sparkline",
]

MAX_FPS = 4
WINDOW = 60
"""Seconds of history the sparkline shows."""
SPARKS = "▁▂▃▄▅▆▇█"
DETAILS_LINES = 20
"""Lines of the details frame besides its recent connections (header, info, footer)."""
RATE_WINDOW = 2.0
"""Seconds of snapshots a bytes/s figure averages (one push alone is too jumpy)."""


def _state(record: dict[str, Any]) -> str:
    """``ps``'s words: ``ready``, ``reconnecting 2``, ``waiting for pod``, ``failed: …``."""
    return str(record.get("status") or record.get("state") or "-")


def rate_text(value: float) -> str:
    return f"{format_bytes(int(value))}/s"


def sparkline(values: Sequence[float]) -> str:
    """One character per value, scaled to the largest; a flat ``▁`` row when idle."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    last = len(SPARKS) - 1
    return "".join(SPARKS[min(last, int(v / top * last + 0.999))] if v else SPARKS[0]
                   for v in values)  # fmt: skip


@dataclass
class ForwardView:
    """One forward as ``top`` shows it: its last record and a minute of byte counts."""

    name: str
    record: dict[str, Any] = field(default_factory=dict)
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=1024))

    def update(self, record: dict[str, Any], now: float) -> None:
        self.record = record
        self.samples.append((now, int(record["bytes_in"]), int(record["bytes_out"])))
        while self.samples and self.samples[0][0] < now - WINDOW - 2:
            self.samples.popleft()

    def rates(self) -> tuple[float, float]:
        """Bytes/s in and out over the last :data:`RATE_WINDOW` seconds of snapshots."""
        if len(self.samples) < 2:
            return 0.0, 0.0
        t1, in1, out1 = self.samples[-1]
        t0, in0, out0 = self.samples[-2]
        for sample in reversed(self.samples):
            if sample[0] < t1 - RATE_WINDOW:
                break
            t0, in0, out0 = sample
        if t0 >= t1:
            t0, in0, out0 = self.samples[-2]
        dt = max(t1 - t0, 1e-3)
        return max(0, in1 - in0) / dt, max(0, out1 - out0) / dt

    def per_second(self, now: float, width: int = WINDOW) -> list[float]:
        """Bytes (in + out) moved in each of the last ``width`` seconds, oldest first."""
        slots = [0.0] * width
        points = list(self.samples)
        for (_, in0, out0), (t1, in1, out1) in itertools.pairwise(points):
            age = int(now - t1)
            if 0 <= age < width:
                slots[width - 1 - age] += max(0, (in1 - in0) + (out1 - out0))
        return slots


@dataclass
class TopModel:
    """What is on screen: the forwards, the selection, the mode and a status line."""

    project: str = ""
    source: str = ""  # "daemon pid 123" or "foreground up pid 123"
    forwards: dict[str, ForwardView] = field(default_factory=dict)
    selected: int = 0
    details: bool = False
    confirm: str | None = None  # the forward a restart waits for "y" on
    message: str = ""
    ended: str | None = None  # set when the project went away
    time: float = 0.0

    def apply(self, snapshot: dict[str, Any]) -> None:
        now = float(snapshot.get("time") or time.time())
        self.project = str(snapshot.get("project", self.project))
        self.time = now
        seen = []
        for record in snapshot.get("forwards", ()):
            name = str(record["name"])
            seen.append(name)
            self.forwards.setdefault(name, ForwardView(name)).update(record, now)
        for name in list(self.forwards):
            if name not in seen:
                del self.forwards[name]
        self.selected = min(self.selected, max(0, len(self.forwards) - 1))

    @property
    def current(self) -> ForwardView | None:
        views = list(self.forwards.values())
        return views[self.selected] if views else None

    def move(self, step: int) -> None:
        if self.forwards:
            self.selected = (self.selected + step) % len(self.forwards)

    def totals(self) -> dict[str, Any]:
        views = list(self.forwards.values())
        rates = [view.rates() for view in views]
        return {
            "forwards": len(views),
            "ready": sum(1 for v in views if v.record.get("state") == "ready"),
            "open": sum(int(v.record.get("connections_open", 0)) for v in views),
            "total": sum(int(v.record.get("connections_total", 0)) for v in views),
            "in_rate": sum(r[0] for r in rates),
            "out_rate": sum(r[1] for r in rates),
            "bytes_in": sum(int(v.record.get("bytes_in", 0)) for v in views),
            "bytes_out": sum(int(v.record.get("bytes_out", 0)) for v in views),
            "reconnects": sum(int(v.record.get("reconnects", 0)) for v in views),
        }


# -- drawing ---------------------------------------------------------------------------------

_STATE_STYLE = {"ready": "green", "failed": "red", "stopped": "dim"}


def _health_text(record: dict[str, Any]) -> str:
    healthy = record.get("healthy")
    return "-" if healthy is None else ("healthy" if healthy else "unhealthy")


def render_screen(model: TopModel, width: int = 120, height: int | None = None) -> RenderableType:
    """The whole frame: header, the forwards (or one forward's details), footer.

    With a ``height``, the details show as many recent connections as fit."""
    from rich.console import Group
    from rich.text import Text

    header = Text.assemble(
        ("pfcompose top", "bold"),
        f"  project {model.project}",
        f" ({model.source})" if model.source else "",
        "  " + time.strftime("%H:%M:%S", time.localtime(model.time or time.time())),
    )
    keys = "q quit  ↑/↓ select  enter details  r restart"
    if model.details:
        keys = "q quit  enter/esc back  r restart"
    parts: list[RenderableType] = [header, Text(keys, style="dim"), Text("")]
    if model.details and model.current is not None:
        fits = None if height is None else max(1, height - DETAILS_LINES)
        parts.append(_details(model.current, fits))
    else:
        parts.append(_table(model, width))
    parts.append(Text(""))
    parts.append(_footer(model))
    if model.confirm is not None:
        parts.append(Text(f"Restart forward {model.confirm}? [y/N]", style="bold yellow"))
    elif model.ended:
        parts.append(Text(model.ended, style="bold red"))
    elif model.message:
        parts.append(Text(model.message, style="cyan"))
    return Group(*parts)


def _table(model: TopModel, width: int) -> RenderableType:
    from rich.table import Table

    with_health = any(v.record.get("healthy") is not None for v in model.forwards.values())
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    columns = ["NAME", "STATE", *(["HEALTH"] if with_health else []), "POD", "TRANSPORT",
               "CONNS", "IN/s", "OUT/s", "LAST MINUTE", "RECONN", "LAST ERROR"]  # fmt: skip
    for column in columns:
        no_wrap = column != "LAST ERROR"
        table.add_column(column, no_wrap=no_wrap, overflow="ellipsis")
    spark_width = 30 if width >= 140 else 20
    for index, view in enumerate(model.forwards.values()):
        record = view.record
        rate_in, rate_out = view.rates()
        state = _state(record)
        style = _STATE_STYLE.get(str(record.get("state")), "yellow")
        cells = [
            view.name,
            f"[{style}]{state}[/{style}]",
            *([_health_text(record)] if with_health else []),
            record.get("pod") or "-",
            record.get("transport") or "-",
            f"{record.get('connections_open', 0)}/{record.get('connections_total', 0)}",
            rate_text(rate_in),
            rate_text(rate_out),
            sparkline(view.per_second(model.time)[-spark_width:]),
            str(record.get("reconnects", 0)),
            record.get("last_error") or "-",
        ]
        selected = index == model.selected
        table.add_row(*cells, style="reverse" if selected else None)
    return table


def _details(view: ForwardView, rows: int | None = None) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    record = view.record
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("forward", view.name)
    info.add_row("target", record.get("target") or "-")
    info.add_row("state", _state(record))
    if record.get("healthy") is not None:
        info.add_row("health", _health_text(record))
    info.add_row("pod", f"{record.get('namespace') or '-'}/{record.get('pod') or '-'}")
    transport = record.get("transport") or "-"
    if record.get("fallback"):
        transport += f" (fell back: {record['fallback']})"
    info.add_row("transport", transport)
    info.add_row("listening", ports_text(record) or "-")
    results = record.get("results") or {}
    info.add_row("connections", f"{record.get('connections_open', 0)} open, "
                 f"{record.get('connections_total', 0)} total; "
                 + ", ".join(f"{k} {v}" for k, v in results.items()))  # fmt: skip
    info.add_row("bytes", f"{format_bytes(int(record.get('bytes_in', 0)))} in, "
                 f"{format_bytes(int(record.get('bytes_out', 0)))} out")  # fmt: skip
    info.add_row("reconnects", str(record.get("reconnects", 0)))
    info.add_row("last error", record.get("last_error") or "-")
    recent = Table(title="recent connections", title_justify="left", box=None,
                   header_style="bold", pad_edge=False)  # fmt: skip
    for column in ("PEER", "PORT", "STARTED", "DURATION", "IN", "OUT", "RESULT", "ENDED"):
        recent.add_column(column, no_wrap=column != "ENDED", overflow="ellipsis")
    for conn in list(reversed(record.get("recent") or []))[:rows]:
        recent.add_row(
            str(conn["peer"]),
            str(conn["local"]),
            time.strftime("%H:%M:%S", time.localtime(float(conn["started"]))),
            format_seconds(float(conn["duration"])),
            format_bytes(int(conn["bytes_in"])),
            format_bytes(int(conn["bytes_out"])),
            str(conn["result"]),
            str(conn["reason"]),
        )
    if not record.get("recent"):
        return Group(info, Text(""), Text("no connection has ended yet", style="dim"))
    return Group(info, Text(""), recent)


def _footer(model: TopModel) -> RenderableType:
    from rich.text import Text

    t = model.totals()
    return Text(
        f"TOTAL  {t['forwards']} forwards, {t['ready']} ready  ·  conns {t['open']}/{t['total']}"
        f"  ·  in {rate_text(t['in_rate'])}  out {rate_text(t['out_rate'])}"
        f"  ·  {format_bytes(t['bytes_in'])} in, {format_bytes(t['bytes_out'])} out"
        f"  ·  reconnects {t['reconnects']}",
        style="bold",
    )


# -- plain output ------------------------------------------------------------------------------


def plain_lines(model: TopModel) -> list[str]:
    """One line per forward: what a pipe or a log gets once a second."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(model.time or time.time()))
    lines = []
    for view in model.forwards.values():
        record = view.record
        rate_in, rate_out = view.rates()
        health = "" if record.get("healthy") is None else f" health={_health_text(record)}"
        lines.append(
            f"{stamp} {view.name} state={_state(record).replace(' ', '_')}{health}"
            f" pod={record.get('pod') or '-'} transport={record.get('transport') or '-'}"
            f" conns={record.get('connections_open', 0)}/{record.get('connections_total', 0)}"
            f" in={int(rate_in)}B/s out={int(rate_out)}B/s"
            f" bytes_in={record.get('bytes_in', 0)} bytes_out={record.get('bytes_out', 0)}"
            f" reconnects={record.get('reconnects', 0)}"
        )
    return lines


# -- talking to the project --------------------------------------------------------------------


async def connect_project(project: str) -> tuple[ControlClient, ProjectPaths, str]:
    """The daemon's channel, else a foreground ``up``'s; NotRunning if neither answers."""
    from pfcompose.daemon.control import NotRunning, call, connect, foreground_paths, project_paths

    for paths in (project_paths(project), foreground_paths(project)):
        try:
            info = await call(paths, "info")
            conn = await connect(paths)
        except NotRunning:
            continue
        kind = "foreground up" if info.get("foreground") else "daemon"
        return conn, paths, f"{kind} pid {info.get('pid')}"
    raise NotRunning(f"project {project} is not running (no daemon, no foreground up)")


@contextlib.asynccontextmanager
async def _subscription(
    project: str, names: Sequence[str], interval: float, count: int | None = None
) -> AsyncIterator[tuple[AsyncIterator[dict[str, Any]], ProjectPaths, str]]:
    conn, paths, source = await connect_project(project)
    try:
        args: dict[str, Any] = {"names": list(names), "interval": interval}
        if count is not None:
            args["count"] = count
        answers = await conn.request("subscribe", **args)

        async def snapshots() -> AsyncIterator[dict[str, Any]]:
            async for message in answers:
                if "snapshot" in message:
                    yield message["snapshot"]

        yield snapshots(), paths, source
    finally:
        await conn.aclose()


async def run_plain(
    project: str, names: Sequence[str], out: TextIO, *, as_json: bool, count: int | None
) -> None:
    """Not a terminal: a block of lines per second (``--json``: each snapshot)."""
    model = TopModel()
    async with _subscription(project, names, 1.0, count) as (snapshots, _, _):
        async for snapshot in snapshots:
            if as_json:
                out.write(json.dumps(snapshot, separators=(",", ":")) + "\n")
            else:
                model.apply(snapshot)
                out.write("".join(line + "\n" for line in plain_lines(model)))
            out.flush()


# -- the terminal ------------------------------------------------------------------------------


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys one by one, no echo; the terminal restored however we leave."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def parse_keys(data: bytes) -> list[str]:
    """Key names in what one read returned: ``up``, ``down``, ``enter``, ``esc`` or the char."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        chunk = data[i:]
        if chunk.startswith((b"\x1b[A", b"\x1bOA")):
            keys.append("up")
            i += 3
        elif chunk.startswith((b"\x1b[B", b"\x1bOB")):
            keys.append("down")
            i += 3
        elif chunk.startswith(b"\x1b[") and len(chunk) >= 3:
            i += 3  # another arrow or function key: ignored
        elif chunk[:1] == b"\x1b":
            keys.append("esc")
            i += 1
        elif chunk[:1] in (b"\r", b"\n"):
            keys.append("enter")
            i += 1
        else:
            keys.append(chunk[:1].decode("latin-1"))
            i += 1
    return keys


async def run_tty(project: str, names: Sequence[str], *, interval: float = 0.5) -> None:
    """The full-screen view until ``q`` (or the project stops)."""
    from rich.console import Console
    from rich.live import Live

    from pfcompose.daemon.control import ControlError, call

    console = Console()
    model = TopModel()
    dirty = trio.Event()

    def changed() -> None:
        dirty.set()

    async with _subscription(project, names, interval) as (snapshots, paths, source):
        model.source = source
        # The first snapshot before the screen changes: a wrong name or a daemon that
        # cannot subscribe is one error line on the normal screen, not a frame.
        try:
            model.apply(await anext(aiter(snapshots)))
        except StopAsyncIteration:
            raise ControlError(f"project {project} is stopping") from None
        dirty.set()
        fd = sys.stdin.fileno()
        with _cbreak(fd), Live(console=console, screen=True, auto_refresh=False) as live:
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    try:
                        async for snapshot in snapshots:
                            model.apply(snapshot)
                            changed()
                    except ControlError as exc:
                        model.ended = f"{exc}; press q to quit"
                        changed()
                        return
                    model.ended = f"project {project} stopped; press q to quit"
                    changed()

                async def restart(name: str) -> None:
                    try:
                        result = await call(paths, "restart", names=[name])
                        model.message = f"restarted {', '.join(result['restarted'])}"
                    except ControlError as exc:
                        model.message = f"restart failed: {exc}"
                    changed()

                async def keys() -> None:
                    while True:
                        await trio.lowlevel.wait_readable(fd)
                        data = os.read(fd, 64)
                        if not data:
                            nursery.cancel_scope.cancel()
                            return
                        for key in parse_keys(data):
                            if _handle_key(model, key, nursery, restart):
                                nursery.cancel_scope.cancel()
                                return
                        changed()

                async def draw() -> None:
                    nonlocal dirty
                    while True:
                        await dirty.wait()
                        dirty = trio.Event()
                        frame = render_screen(model, console.width, console.height)
                        live.update(frame, refresh=True)
                        await trio.sleep(1 / MAX_FPS)  # at most MAX_FPS frames a second

                nursery.start_soon(receive)
                nursery.start_soon(keys)
                nursery.start_soon(draw)


def _handle_key(model: TopModel, key: str, nursery: trio.Nursery, restart: Any) -> bool:
    """Apply one key; True to quit."""
    if model.confirm is not None:
        name, model.confirm = model.confirm, None
        if key in ("y", "Y"):
            model.message = f"restarting {name}…"
            nursery.start_soon(restart, name)
        else:
            model.message = "restart cancelled"
        return False
    if key in ("q", "Q"):
        return True
    if key in ("up", "k"):
        model.move(-1)
    elif key in ("down", "j"):
        model.move(1)
    elif key == "enter":
        model.details = not model.details
    elif key in ("esc", "\x7f"):
        model.details = False
    elif key == "r" and model.current is not None:
        model.confirm = model.current.name
    return False
