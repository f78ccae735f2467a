"""The control channel between the CLI and a project's daemon: a Unix socket.

One socket per project, in a directory only the user can enter (``$XDG_RUNTIME_DIR/
pfcompose``, else ``pfcompose-UID`` under the temp dir, mode 0700), the socket
itself mode 0600 — file permissions are the whole access control, so there is no
TCP port and no token. Beside it a lock file, held with ``flock`` for the daemon's
whole life: a socket whose lock is free was left by a daemon that died, and is
removed (stale socket cleanup) instead of making the next ``up -d`` fail.

The protocol is JSON lines. A request is one line
``{"v": 1, "id": N, "op": "ps", "args": {...}}``; the answer is one or more lines
with the same ``id``, the last one carrying ``"done": true`` — ``{"v": 1, "id": N,
"ok": true, "done": true, "result": ...}`` or ``{"v": 1, "id": N, "ok": false,
"done": true, "error": "one line"}``. Streaming answers (``logs -f``) send
``{"v": 1, "id": N, "event": {...}}`` lines before the last. A request whose major
version the daemon does not speak is answered with an error, never guessed at.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from pfcompose._util.lines import LineSplitter, LineTooLongError
from pfcompose.platform import ipc
from pfcompose.platform.locks import FileLock

__all__ = [
    "MAX_LINE",
    "PROTOCOL_VERSION",
    "ControlClient",
    "ControlError",
    "DaemonLock",
    "Handler",
    "InFlight",
    "NotRunning",
    "ProjectPaths",
    "Reply",
    "bind_socket",
    "call",
    "call_running",
    "clean_stale",
    "connect",
    "connect_running",
    "decode",
    "encode",
    "foreground_paths",
    "is_locked",
    "list_projects",
    "locked_pid",
    "project_paths",
    "runtime_dir",
    "serve",
    "socket_is_private",
]

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20
"""Longest accepted line; a peer sending more is cut off (bounded memory)."""

_SAFE = re.compile(r"[^a-z0-9_.-]")


class ControlError(Exception):
    """The daemon answered with an error, or the channel broke; ``str()`` is one line."""


class NotRunning(ControlError):
    """No daemon is running for the project (a stale socket has been cleaned up)."""


# -- where the sockets live -----------------------------------------------------------


def runtime_dir(environ: Mapping[str, str] | None = None, *, create: bool = True) -> Path:
    """The per-user directory of sockets and locks, created 0700 if missing.

    Refuses a directory another user owns or others can enter: anyone who can
    reach the socket can stop or rewire the user's forwards.
    """
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        path = Path(xdg) / "pfcompose"
    else:
        uid = ipc.user_id()  # Windows: none; %TEMP% is in the user's own profile
        name = f"pfcompose-{uid}" if uid is not None else "pfcompose"
        path = Path(tempfile.gettempdir()) / name
    if not create:
        return path
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if ipc.user_id() is None:
        return path
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != ipc.user_id():
        raise ControlError(f"{path} is not a directory owned by you; refusing to use it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class ProjectPaths:
    """The files of one project's daemon."""

    project: str
    socket: Path
    lock: Path
    stderr: Path  # the daemon's stderr: where a crash leaves its traceback
    log: Path  # the default event log (JSON lines)


def _file_stem(project: str, base: Path) -> str:
    # AF_UNIX paths are limited (104 bytes on macOS): a long name is shortened with a hash
    return ipc.fit_stem(base, _SAFE.sub("_", project.lower()) or "_")


def project_paths(project: str, directory: Path | None = None) -> ProjectPaths:
    base = directory if directory is not None else runtime_dir()
    stem = _file_stem(project, base)
    return ProjectPaths(
        project=project,
        socket=base / f"{stem}.sock",
        lock=base / f"{stem}.lock",
        stderr=base / f"{stem}.stderr",
        log=base / f"{stem}.events.jsonl",
    )


def foreground_paths(project: str, directory: Path | None = None) -> ProjectPaths:
    """The control channel of a foreground ``up`` (``top`` reaches it there): beside the
    daemon's, named so that ``ls`` (``*.sock``) never takes it for a daemon."""
    base = directory if directory is not None else runtime_dir()
    stem = _file_stem(project, base)
    return ProjectPaths(
        project=project,
        socket=base / f"{stem}.up.socket",
        lock=base / f"{stem}.up.lock",
        stderr=base / f"{stem}.up.stderr",
        log=base / f"{stem}.events.jsonl",
    )


def list_projects(directory: Path | None = None) -> list[ProjectPaths]:
    """Every project with a socket in the runtime directory (maybe stale), by name."""
    base = directory if directory is not None else runtime_dir()
    found = sorted(p.name[: -len(".sock")] for p in base.glob("*.sock"))
    return [project_paths(stem, base) for stem in found]


# -- the daemon's lock ------------------------------------------------------------------


class DaemonLock(FileLock):
    """An exclusive lock on the project's lock file, held while the daemon lives.

    ``flock`` where there is one: the kernel drops it when the process dies, however
    it dies, which is what makes the stale-socket test exact
    (:mod:`pfcompose.platform.locks` has the portable path).
    """


def locked_pid(path: Path) -> int | None:
    """The pid of the live daemon holding ``path``, or None if the lock is free."""
    if not is_locked(path):
        return None
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def is_locked(path: Path) -> bool:
    """True if a live daemon holds the lock file."""
    probe = DaemonLock(path)
    if probe.try_acquire():
        probe.release()
        return False
    return True


def clean_stale(paths: ProjectPaths) -> bool:
    """Remove the socket of a dead daemon; True if one was removed."""
    if not paths.socket.exists() or is_locked(paths.lock):
        return False
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    return True


# -- framing -----------------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"malformed control message: {exc}") from None
    if not isinstance(message, dict):
        raise ControlError("malformed control message: not a JSON object")
    return message


class LineReader:
    """Lines from a trio stream, each at most ``MAX_LINE`` bytes: a loop around the one
    :class:`~pfcompose._util.lines.LineSplitter`."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._splitter = LineSplitter(MAX_LINE)
        self._lines: deque[bytes] = deque()

    async def readline(self) -> bytes | None:
        """The next line without its newline; None at EOF (an unterminated rest is dropped:
        a message is a whole line)."""
        while not self._lines:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            try:
                self._lines.extend(self._splitter.feed(data))
            except LineTooLongError:
                raise ControlError("control message too long") from None
        return self._lines.popleft()


# -- server ------------------------------------------------------------------------------

Reply = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Sends one streamed message (``{"event": ...}``) before the final answer."""

Handler = Callable[[str, dict[str, Any], Reply], Awaitable[Any]]
"""``(op, args, send) -> result``; raise ControlError for a one-line error answer."""


async def bind_socket(path: Path) -> ipc.ControlListener:
    """Bind the project's socket, mode 0600 from the start (umask, then chmod) — or,
    without AF_UNIX, a loopback port whose secret is in ``path`` (see
    :mod:`pfcompose.platform.ipc`)."""
    return await ipc.bind_control(path)


class InFlight:
    """Counts requests being answered, so a stopping daemon can finish its answers."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


async def serve(
    listener: ipc.ControlListener,
    handler: Handler,
    *,
    in_flight: InFlight | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients until cancelled; each connection may send several requests."""
    tracker = in_flight if in_flight is not None else InFlight()
    async with trio.open_nursery() as nursery, listener:
        task_status.started()
        while True:
            stream = await listener.accept()
            nursery.start_soon(_serve_connection, stream, handler, tracker, listener)


async def _serve_connection(
    stream: trio.abc.Stream, handler: Handler, tracker: InFlight, listener: ipc.ControlListener
) -> None:
    async with stream:
        if not await listener.admit(stream):
            return  # a TCP client without the project's secret
        reader = LineReader(stream)
        send_lock = trio.Lock()

        async def send(message: Mapping[str, Any]) -> None:
            async with send_lock:
                await stream.send_all(encode(message))

        try:
            while (line := await reader.readline()) is not None:
                if not line.strip():
                    continue
                tracker.enter()
                try:
                    await _answer(line, handler, send)
                finally:
                    tracker.exit()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ControlError):
            return  # the client went away (or sent garbage too long to frame)


async def _answer(line: bytes, handler: Handler, send: Reply) -> None:
    request_id: Any = None
    try:
        request = decode(line)
        request_id = request.get("id")
        version = request.get("v")
        if version != PROTOCOL_VERSION:
            raise ControlError(
                f"unsupported control protocol version {version!r} "
                f"(this daemon speaks {PROTOCOL_VERSION}); run the same pfcompose version"
            )
        op = request.get("op")
        args = request.get("args") or {}
        if not isinstance(op, str) or not isinstance(args, dict):
            raise ControlError("malformed request: needs op (string) and args (object)")

        async def stream_one(message: Mapping[str, Any]) -> None:
            await send({"v": PROTOCOL_VERSION, "id": request_id, **message})

        result = await handler(op, args, stream_one)
    except ControlError as exc:
        await send(
            {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "done": True, "error": str(exc)}
        )
        return
    await send(
        {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "done": True, "result": result}
    )


# -- client ------------------------------------------------------------------------------


class ControlClient:
    """A client of one daemon's control socket (ps, logs, top, down …); requests are
    answered in order."""

    def __init__(self, stream: trio.abc.Stream, paths: ProjectPaths) -> None:
        self._stream = stream
        self._reader = LineReader(stream)
        self._ids = 0
        self.paths = paths

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def request(self, op: str, **args: Any) -> AsyncIterator[dict[str, Any]]:
        """Send one request; yield each streamed message, then the final answer's result.

        The last item yielded is ``{"result": ...}``; an error answer raises ControlError.
        """
        self._ids += 1
        request_id = self._ids
        message = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args}
        try:
            await self._stream.send_all(encode(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ControlError(f"the {self.paths.project} daemon went away") from exc
        return self._answers(request_id)

    async def _answers(self, request_id: int) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                line = await self._reader.readline()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ControlError(f"the {self.paths.project} daemon went away") from exc
            if line is None:
                raise ControlError(f"the {self.paths.project} daemon closed the connection")
            message = decode(line)
            if message.get("id") != request_id:
                continue
            if message.get("done"):
                if not message.get("ok"):
                    raise ControlError(str(message.get("error") or "request failed"))
                yield {"result": message.get("result")}
                return
            yield message

    async def call(self, op: str, **args: Any) -> Any:
        """A request with a single answer: its result."""
        result: Any = None
        async for message in await self.request(op, **args):
            if "result" in message:
                result = message["result"]
        return result


async def connect(paths: ProjectPaths) -> ControlClient:
    """Connect to the project's daemon; a stale socket is removed and NotRunning raised."""
    try:
        stream = await ipc.connect_control(paths.socket)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            clean_stale(paths)
            message = f"project {paths.project} is not running"
            raise NotRunning(message) from None
        raise ControlError(f"cannot reach the {paths.project} daemon: {exc.strerror}") from None
    return ControlClient(stream, paths)


async def call(paths: ProjectPaths, op: str, **args: Any) -> Any:
    """Connect, make one single-answer request, close."""
    conn = await connect(paths)
    try:
        return await conn.call(op, **args)
    finally:
        await conn.aclose()


async def connect_running(paths: ProjectPaths) -> ControlClient:
    """``connect`` to the project's daemon or, when none runs, its foreground ``up``
    (which answers info, ps, subscribe, wait, logs, restart and down): a project is
    running whichever way it was started. ``NotRunning`` names the daemon."""
    try:
        return await connect(paths)
    except NotRunning:
        try:
            return await connect(foreground_paths(paths.project))
        except NotRunning:
            pass
        raise


async def call_running(paths: ProjectPaths, op: str, **args: Any) -> Any:
    """``call`` the daemon or the foreground ``up`` (:func:`connect_running`)."""
    conn = await connect_running(paths)
    try:
        return await conn.call(op, **args)
    finally:
        await conn.aclose()


def socket_is_private(path: Path) -> bool:
    """Mode 0600, owned by us, in a 0700 directory owned by us (what tests check)."""
    return ipc.endpoint_is_private(path)
