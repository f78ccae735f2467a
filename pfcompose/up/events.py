"""Events: what forwards report, flowing one way — workers → supervisor → UI.

A worker never prints. It emits an :class:`Event`; whoever runs the supervisor
decides where events go (a terminal, JSON lines, a log ring for ``ps``/``logs``).
Keeping the text in the event means every sink shows the same words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What an event is about; JSON consumers switch on it."""

    LISTENING = "listening"  # "Forwarding from 127.0.0.1:8080 -> 80"
    LISTEN_FAILED = "listen_failed"  # "Unable to listen on port 8080: …"
    CONNECTION = "connection"  # "Handling connection for 8080"
    CONNECTION_ERROR = "connection_error"  # one connection ended badly; the forward goes on
    CONNECTION_CLOSED = "connection_closed"  # one connection's end: peer, duration, bytes, reason
    STATE = "state"  # resolving / connecting / ready / reconnecting / failed / stopped
    HEALTH = "health"  # a health check's state changed: starting / healthy / unhealthy
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    forward: str
    kind: Kind
    message: str
    time: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        """Errors go to stderr, as kubectl writes ``Unable to listen…`` there."""
        return self.kind in (Kind.LISTEN_FAILED, Kind.CONNECTION_ERROR, Kind.ERROR, Kind.WARNING)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 6),
            "forward": self.forward,
            "kind": self.kind.value,
            "message": self.message,
            **self.data,
        }


EventSink = Callable[[Event], None]
"""Receives every event, synchronously, on the trio thread; must not block."""


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that hands each event to several."""

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
