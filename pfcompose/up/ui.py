"""Terminal output: compose-style prefixed lines, or JSON lines for machines.

``db  | Forwarding from 127.0.0.1:15432 -> 5432`` — the text after the bar is what
kubectl prints, so habits and scripts carry over. Every line is flushed as it is
written, so a pipe sees it at once.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import TextIO

from pfcompose.up.events import Event, Kind

# Compose's palette order, skipping colours that vanish on dark or light backgrounds.
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_RESET = "\x1b[0m"


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Output:
    """Writes and flushes lines; a closed reader (``up | head -3``) is reported, not raised.

    Without ``on_closed`` a BrokenPipeError propagates (click then exits 1 quietly).
    With it, the stream's descriptor is pointed at /dev/null (so the interpreter's
    final flush stays quiet), later lines are dropped and ``on_closed`` runs once:
    a long-running ``up`` stops instead of printing a traceback.
    """

    def __init__(self, on_closed: Callable[[], None] | None) -> None:
        self._on_closed = on_closed
        self.closed = False

    def write(self, stream: TextIO, line: str) -> None:
        if self.closed:
            return
        try:
            stream.write(line)
            stream.flush()
        except BrokenPipeError:
            if self._on_closed is None:
                raise
            self.closed = True
            _point_at_devnull(stream)
            self._on_closed()


def _point_at_devnull(stream: TextIO) -> None:
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # not a real file (tests), or already closed
        return
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _silenced(event: Event, quiet_connections: bool, closed: bool = False) -> bool:
    """Per-connection lines are dropped with ``--quiet-connections`` or the forward's key.

    A connection's end (bytes, duration, reason) never reaches ``up``'s output: it is
    for the event log, ``logs --connections``, metrics and ``top``.
    """
    if event.kind is Kind.CONNECTION_CLOSED:
        return not closed
    return event.kind is Kind.CONNECTION and (quiet_connections or event.data.get("quiet", False))


class TerminalSink:
    """Prints events as ``NAME | text``; names padded to the longest, coloured on a TTY."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        colour: bool | None = None,
        quiet_connections: bool = False,
        on_closed: Callable[[], None] | None = None,
        connection_ends: bool = False,
    ) -> None:
        self._output = _Output(on_closed)
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._connection_ends = connection_ends  # ``logs --connections`` prints them
        names = list(names)
        self._width = max((len(n) for n in names), default=0)
        self._colour = _is_tty(self._out) if colour is None else colour
        self._colours = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}
        self._quiet_connections = quiet_connections

    def prefix(self, name: str) -> str:
        if not name:
            return ""
        padded = name.ljust(self._width)
        if self._colour:
            colour = self._colours.get(name, _COLOURS[0])
            return f"\x1b[{colour}m{padded} |{_RESET} "
        return f"{padded} | "

    def __call__(self, event: Event) -> None:
        if _silenced(event, self._quiet_connections, self._connection_ends):
            return
        stream = self._err if event.is_error else self._out
        text = event.message
        if event.kind is Kind.WARNING:
            text = f"warning: {text}"
        self._output.write(stream, f"{self.prefix(event.forward)}{text}\n")


class JsonSink:
    """One JSON object per line, flushed: ``{"time", "forward", "kind", "message", …}``."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        quiet_connections: bool = False,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self._output = _Output(on_closed)
        self._out = out if out is not None else sys.stdout
        self._quiet_connections = quiet_connections

    def __call__(self, event: Event) -> None:
        if _silenced(event, self._quiet_connections):
            return
        line = json.dumps(event.to_json(), separators=(",", ":")) + "\n"
        self._output.write(self._out, line)
