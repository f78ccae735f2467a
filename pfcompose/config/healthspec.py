"""A forward's ``healthcheck:`` as the runtime needs it: plain data, JSON both ways.

Kept apart from the pydantic model (``config/model.py``) for the same reason as
``spec.py``: the lean runtime and the daemon rebuild it from JSON without pydantic.
Timings follow compose's healthcheck: a check runs every ``interval``; one that
takes longer than ``timeout`` fails; ``retries`` consecutive failures make the
forward ``unhealthy``; failures during ``start_period`` do not count (a success
there still makes it ``healthy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_EXPECT",
    "HealthKind",
    "HealthSpec",
    "health_from_json",
    "health_to_json",
]

HealthKind = Literal["tcp", "http", "exec"]

DEFAULT_EXPECT: tuple[tuple[int, int], ...] = ((200, 399),)
"""An ``http`` check's healthy statuses unless ``expect`` says otherwise (inclusive ranges)."""


@dataclass(frozen=True)
class HealthSpec:
    kind: HealthKind
    port: int | str | None = None  # which of the forward's remote ports; None = the first
    path: str = "/"
    expect: tuple[tuple[int, int], ...] = DEFAULT_EXPECT
    host: str | None = None  # the Host header (default: localhost:<local port>)
    https: bool = False
    insecure: bool = False  # https without verifying the certificate
    command: tuple[str, ...] = ()  # exec: argv (a string in the file runs under sh -c)
    interval: float = 5.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 0.0

    def expects(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect)

    def expect_text(self) -> str:
        return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.expect)


def health_to_json(health: HealthSpec | None) -> dict[str, Any] | None:
    if health is None:
        return None
    return {
        "type": health.kind,
        "port": health.port,
        "path": health.path,
        "expect": [list(pair) for pair in health.expect],
        "host": health.host,
        "https": health.https,
        "insecure": health.insecure,
        "command": list(health.command),
        "interval": health.interval,
        "timeout": health.timeout,
        "retries": health.retries,
        "start_period": health.start_period,
    }


def health_from_json(data: dict[str, Any] | None) -> HealthSpec | None:
    if data is None:
        return None
    return HealthSpec(
        kind=data["type"],
        port=data["port"],
        path=data["path"],
        expect=tuple((int(lo), int(hi)) for lo, hi in data["expect"]),
        host=data["host"],
        https=data["https"],
        insecure=data["insecure"],
        command=tuple(data["command"]),
        interval=data["interval"],
        timeout=data["timeout"],
        retries=data["retries"],
        start_period=data["start_period"],
    )
