"""Where a daemon's events go besides the terminal it no longer has.

A bounded in-memory ring answers ``pfcompose logs`` quickly and feeds ``logs -f``
followers; a JSON-lines file (rotated by size, so hours of connection lines cannot
fill a disk) keeps the history past the ring and past the daemon. Both are an
:data:`~pfcompose.up.events.EventSink`: synchronous and never blocking the trio loop on
a slow follower — a follower that falls behind is cut off with a note, not waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from pfcompose.platform import O_CLOEXEC
from pfcompose.up.events import Event, Kind

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RING",
    "EventLog",
    "EventLogFile",
    "answer_logs",
    "event_from_json",
    "matches",
    "read_log_file",
]

DEFAULT_RING = 2000
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3
FOLLOW_BUFFER = 1000


def event_from_json(data: dict[str, Any]) -> Event:
    """The inverse of :meth:`Event.to_json` (unknown kinds become warnings)."""
    rest = {k: v for k, v in data.items() if k not in ("time", "forward", "kind", "message")}
    try:
        kind = Kind(data.get("kind", "warning"))
    except ValueError:
        kind = Kind.WARNING
    return Event(
        forward=str(data.get("forward", "")),
        kind=kind,
        message=str(data.get("message", "")),
        time=float(data.get("time", 0.0)),
        data=rest,
    )


def matches(event: dict[str, Any], since: float | None, names: Sequence[str]) -> bool:
    """``--since`` and ``FORWARD...`` filters; project-wide events (no forward) always pass."""
    if since is not None and float(event.get("time", 0.0)) < since:
        return False
    forward = event.get("forward", "")
    return not names or not forward or forward in names


class EventLogFile:
    """Appends events as JSON lines; at ``max_bytes`` renames ``log`` → ``log.1`` → ….

    Writes are small appends to a local file, flushed per line so ``tail -f`` and
    ``logs`` after a crash see everything.
    """

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | O_CLOEXEC, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        if self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
            self._rotate()
        self._file.write(line)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        for index in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)
        self._file = self._open()

    def close(self) -> None:
        self._file.close()


def read_log_file(path: Path, *, backups: int = DEFAULT_BACKUPS) -> Iterator[dict[str, Any]]:
    """Every event of a log and its rotated backups, oldest first; bad lines skipped."""
    files = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)] + [path]
    for file in files:
        try:
            handle = file.open(encoding="utf-8")
        except FileNotFoundError:
            continue
        with handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        yield record


class _Follower:
    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](FOLLOW_BUFFER)


class EventLog:
    """The daemon's event sink: ring, optional file, and live followers."""

    def __init__(self, *, capacity: int = DEFAULT_RING, file: EventLogFile | None = None) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._file = file
        self._followers: set[_Follower] = set()

    def __call__(self, event: Event) -> None:
        record = event.to_json()
        self._ring.append(record)
        if self._file is not None:
            self._file.write(record)
        for follower in list(self._followers):
            if not matches(record, None, follower.names):
                continue
            try:
                follower.send.send_nowait(record)
            except trio.WouldBlock:
                self._followers.discard(follower)
                follower.send.close()  # the reader sees the end and says it fell behind
            except trio.BrokenResourceError:
                self._followers.discard(follower)

    def snapshot(
        self, since: float | None = None, names: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        return [record for record in self._ring if matches(record, since, names)]

    def follow(self, names: Sequence[str] = ()) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        """A channel of every later event; it ends if the reader falls too far behind."""
        follower = _Follower(names)
        self._followers.add(follower)
        return follower.receive

    def unfollow(self, channel: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        for follower in list(self._followers):
            if follower.receive is channel:
                self._followers.discard(follower)
                follower.send.close()

    def close(self) -> None:
        for follower in list(self._followers):
            follower.send.close()
        self._followers.clear()
        if self._file is not None:
            self._file.close()


async def answer_logs(
    events: EventLog,
    args: Mapping[str, Any],
    send: Callable[[Mapping[str, Any]], Awaitable[None]],
    closing: trio.Event,
) -> dict[str, Any]:
    """Answer ``logs`` (of the daemon and of a foreground ``up``): the ring's records
    (``since``, ``names``, ``kinds``, ``tail``), then with ``follow`` every later one
    until the project stops (``closing``) or the reader falls behind."""
    names = list(args.get("names") or ())
    since = args.get("since")
    tail = args.get("tail")
    kinds = set(args.get("kinds") or ())  # ``logs --connections``: connection_closed
    records = [r for r in events.snapshot(since, names) if _kind_in(r, kinds)]
    # Register before the first await, so no event falls between snapshot and follow.
    follow = events.follow(names) if args.get("follow") else None
    if isinstance(tail, int) and tail >= 0:
        records = records[len(records) - tail :] if tail else []
    try:
        for record in records:
            await send({"event": record})
        if follow is None:
            return {"ended": "snapshot"}
        async with follow:
            async for record in follow:
                if matches(record, since, names) and _kind_in(record, kinds):
                    await send({"event": record})
        return {"ended": "stopped" if closing.is_set() else "behind"}
    finally:
        if follow is not None:
            events.unfollow(follow)


def _kind_in(record: Mapping[str, Any], kinds: set[str]) -> bool:
    return not kinds or record.get("kind") in kinds
