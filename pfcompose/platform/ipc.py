"""The control channel's transport: an AF_UNIX socket, else loopback TCP with a secret.

Fast path (POSIX): the project's ``.sock`` is a Unix socket, mode 0600, in the
user's 0700 runtime directory — file permissions are the whole access control.
Portable path (no ``AF_UNIX``, as on native Windows' Python; ``PFCOMPOSE_PORTABLE``;
or ``PFCOMPOSE_CONTROL=tcp``): the daemon listens on 127.0.0.1 at a port the system
picks, and the ``.sock`` path is instead a regular file, readable by the user only,
naming that port and a per-project secret of 256 random bits. A client reads the
file and sends the secret (64 hex digits and a newline) before its first request;
a connection that does not is closed unanswered. Anyone on the machine can reach a
loopback port, so the secret is what stands in for the socket's permissions.

Clients need no setting: they look at what the daemon made (a socket or a file).

AF_UNIX paths are limited (104 bytes with the NUL on macOS, 108 on Linux); macOS's
per-user temp directory is long, so a long project name would overflow it. File
names are shortened to fit with a hash of the name (:func:`fit_stem`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
from pathlib import Path
from typing import Any

import trio

from pfcompose.platform.host import PORTABLE

__all__ = [
    "SOCKET_PATH_MAX",
    "TRANSPORT_VARIABLE",
    "UNIX",
    "ControlListener",
    "bind_control",
    "connect_control",
    "endpoint_is_private",
    "fit_stem",
    "is_endpoint",
    "user_id",
]

TRANSPORT_VARIABLE = "PFCOMPOSE_CONTROL"
"""``tcp`` forces the loopback transport (``unix``, the default where there is one)."""
UNIX = (hasattr(socket, "AF_UNIX") and not PORTABLE
        and os.environ.get(TRANSPORT_VARIABLE, "unix").lower() != "tcp")  # fmt: skip
"""New daemons listen on a Unix socket (else loopback TCP with a secret)."""
SOCKET_PATH_MAX = 103
"""Longest AF_UNIX path in bytes on every system we run on (macOS: 104 with the NUL)."""
SECRET_BYTES = 32
_SECRET_LINE = SECRET_BYTES * 2 + 1  # hex digits and "\n"
ADMIT_TIMEOUT = 5.0
"""Seconds a TCP client has to present the secret before it is cut off."""
_SUFFIX = ".up.socket"  # the longest name beside a stem: a foreground up's socket


def user_id() -> int | None:
    """This user's uid, or None where there is none (Windows: per-user ACLs instead)."""
    getuid = getattr(os, "getuid", None)
    return None if getuid is None else int(getuid())


def fit_stem(base: Path, stem: str) -> str:
    """``stem``, or a prefix of it plus 12 hex digits of its SHA-256, so that
    ``base/stem.up.socket`` (the longest of the names) fits :data:`SOCKET_PATH_MAX`
    (and no stem exceeds 60).

    Idempotent: a fitted stem fits again unchanged (``ps`` lists projects by stem).
    """
    budget = min(60, SOCKET_PATH_MAX - len(os.fsencode(base)) - 1 - len(_SUFFIX))
    if len(stem) <= budget:
        return stem
    digest = hashlib.sha256(stem.encode()).hexdigest()[:12]
    keep = max(0, budget - len(digest) - 1)
    return f"{stem[:keep]}-{digest}" if keep else digest


class ControlListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts control connections; :meth:`admit` checks a TCP client's secret."""

    def __init__(self, inner: trio.abc.Listener[Any], secret: str | None) -> None:
        self.inner = inner
        self.secret = secret

    async def accept(self) -> trio.abc.Stream:
        stream: trio.abc.Stream = await self.inner.accept()
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def admit(self, stream: trio.abc.Stream) -> bool:
        """True if ``stream`` may make requests: always over a Unix socket; over TCP
        once it sent the secret. Reads exactly the secret's line, nothing after it."""
        if self.secret is None:
            return True
        expected = (self.secret + "\n").encode()
        got = b""
        with trio.move_on_after(ADMIT_TIMEOUT):
            while len(got) < _SECRET_LINE:
                chunk = await stream.receive_some(_SECRET_LINE - len(got))
                if not chunk:
                    break
                got += chunk
        return hmac.compare_digest(got, expected)


async def bind_control(path: Path) -> ControlListener:
    """Listen for the project's clients at ``path``, private from the start."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # only called while holding the lock: anything here is stale
    if UNIX:
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, f"control socket path too long for AF_UNIX: {path}")
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
        return ControlListener(trio.SocketListener(sock), None)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    secret = secrets.token_hex(SECRET_BYTES)
    record = {"transport": "tcp", "host": "127.0.0.1", "port": port, "pid": os.getpid(),
              "secret": secret}  # fmt: skip
    _write_private(path, json.dumps(record))
    return ControlListener(listener, secret)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` mode 0600, atomically (a reader never sees half)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _tcp_record(path: Path) -> dict[str, Any]:
    """The daemon's port and secret; OSError ENOENT/ECONNREFUSED when gone or unreadable."""
    try:
        record = json.loads(path.read_text())
        port, secret = int(record["port"]), str(record["secret"])
        host = str(record.get("host", "127.0.0.1"))
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "no such daemon") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise OSError(errno.ECONNREFUSED, "unreadable control endpoint file") from None
    if len(secret) != SECRET_BYTES * 2 or host not in ("127.0.0.1", "::1"):
        raise OSError(errno.ECONNREFUSED, "unreadable control endpoint file")
    return {"host": host, "port": port, "secret": secret}


async def connect_control(path: Path) -> trio.abc.Stream:
    """Connect to the daemon listening at ``path`` (a socket, or a TCP endpoint file).

    OSError with ENOENT or ECONNREFUSED when no daemon is there.
    """
    if path.is_socket() or (not path.exists() and UNIX):
        if not hasattr(socket, "AF_UNIX"):
            raise OSError(errno.ECONNREFUSED, "this Python has no AF_UNIX")
        return await trio.open_unix_socket(str(path))
    record = _tcp_record(path)
    try:
        stream = await trio.open_tcp_stream(record["host"], record["port"])
    except OSError as exc:  # trio's "all attempts failed" carries no errno of its own
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        code = cause.errno or errno.ECONNREFUSED
        raise OSError(code, os.strerror(code)) from None
    try:
        await stream.send_all((record["secret"] + "\n").encode())
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def is_endpoint(path: Path) -> bool:
    """A control endpoint (socket, or TCP endpoint file) is at ``path``."""
    return path.is_socket() or path.is_file()


def endpoint_is_private(path: Path) -> bool:
    """Mode 0600, owned by us, in a 0700 directory owned by us (what tests check)."""
    info, parent = os.stat(path), os.stat(path.parent)
    uid = user_id()
    kind_ok = stat.S_ISSOCK(info.st_mode) or stat.S_ISREG(info.st_mode)
    if uid is None:  # Windows: the user's profile directory's ACL
        return kind_ok
    return (
        kind_ok
        and stat.S_IMODE(info.st_mode) == 0o600
        and info.st_uid == uid
        and stat.S_IMODE(parent.st_mode) == 0o700
        and parent.st_uid == uid
    )
