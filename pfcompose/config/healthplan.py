"""``healthcheck:`` validated models → :class:`HealthSpec`, with FILE:LINE:COL problems.

A forward's own ``healthcheck`` keys win over ``defaults.healthcheck`` key by key
(as ``reconnect``); ``disable: true`` turns an inherited check off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from pfcompose.config.healthspec import DEFAULT_EXPECT, HealthSpec
from pfcompose.config.model import Defaults, Forward
from pfcompose.config.ports import PortMap
from pfcompose.config.problems import Problem

__all__ = ["build_health", "parse_expect"]

_FIELDS = ("type", "port", "path", "expect", "host", "https", "insecure", "command",
           "interval", "timeout", "retries", "start_period", "disable")  # fmt: skip
_HTTP_ONLY = ("path", "expect", "host", "https", "insecure")
_RANGE = re.compile(r"^\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?$")


class Origin(Protocol):
    """plan.py's ``_Origin``: where a setting was written."""

    def child(self, *loc: str | int) -> Origin: ...
    def problem(self, message: str) -> Problem: ...


def parse_expect(value: int | str | list[int | str]) -> tuple[tuple[int, int], ...]:
    """``200``, ``"200-299"`` or a list of them → inclusive ranges; ValueError names the bad one."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("expect must name at least one status")
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        else:
            match = _RANGE.match(str(item))
            if match is None:
                raise ValueError(
                    f"invalid status {item!r}: use a number such as 200 or a "
                    'range such as "200-299"'
                )
            low = int(match[1])
            high = int(match[2] or match[1])
        if not (100 <= low <= high <= 599):
            raise ValueError(f"invalid status {item!r}: statuses are 100-599, low to high")
        ranges.append((low, high))
    return tuple(ranges)


def build_health(
    fwd: Forward, here: Origin, defaults: Defaults, base: Origin, ports: Sequence[PortMap]
) -> tuple[HealthSpec | None, list[Problem]]:
    """The forward's health check (None: none declared or disabled) and its problems."""
    own, inherited = fwd.healthcheck, defaults.healthcheck
    if own is None and inherited is None:
        return None, []
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for field in _FIELDS:
        for model, origin in ((own, here), (inherited, base)):
            value = None if model is None else getattr(model, field)
            if value is not None:
                values[field] = value
                origins[field] = origin.child("healthcheck", field)
                break
    if values.get("disable"):
        return None, []
    block = (here if own is not None else base).child("healthcheck")
    kind = values.get("type")
    if kind is None and own is None:  # defaults' timings only, for forwards that check
        return None, []
    if kind is None:
        return None, [block.problem("required key is missing: type (tcp, http or exec)")]
    problems: list[Problem] = []
    if kind != "http":
        for field in _HTTP_ONLY:
            if (
                field in values
                and origins[field] is not None
                and own is not None
                and getattr(own, field) is not None
            ):
                problems.append(origins[field].problem(f"{field} applies to http checks only"))
    if kind != "exec" and own is not None and own.command is not None:
        problems.append(origins["command"].problem("command applies to exec checks only"))
    command: tuple[str, ...] = ()
    if kind == "exec":
        raw = values.get("command")
        if raw is None:
            problems.append(block.problem("an exec check needs a command"))
        elif isinstance(raw, str):
            if not raw.strip():
                problems.append(origins["command"].problem("the command is empty"))
            command = ("sh", "-c", raw)
        elif not raw or not raw[0]:
            problems.append(origins["command"].problem("the command is empty"))
        else:
            command = tuple(raw)
    expect = DEFAULT_EXPECT
    if kind == "http" and "expect" in values:
        try:
            expect = parse_expect(values["expect"])
        except ValueError as exc:
            problems.append(origins["expect"].problem(str(exc)))
    path = str(values.get("path", "/"))
    if not path.startswith("/"):
        problems.append(origins["path"].problem(f'the path must start with "/", not {path!r}'))
    port = values.get("port")
    if port is not None and ports:
        remotes = [str(p.remote) for p in ports]
        if str(port) not in remotes:
            problems.append(origins["port"].problem(
                f"{port} is not one of the forward's remote ports ({', '.join(remotes)})"
            ))  # fmt: skip
    for field in ("interval", "timeout"):
        if field in values and not values[field] > 0:
            problems.append(origins[field].problem(f"{field} must be more than 0"))
    if problems:
        return None, problems
    return HealthSpec(
        kind=kind,
        port=port,
        path=path,
        expect=expect,
        host=values.get("host"),
        https=bool(values.get("https", False)),
        insecure=bool(values.get("insecure", False)),
        command=command,
        interval=float(values.get("interval", 5.0)),
        timeout=float(values.get("timeout", 2.0)),
        retries=int(values.get("retries", 3)),
        start_period=float(values.get("start_period", 0.0)),
    ), []
