"""Health checks: whether the application behind a forward answers, not only the session.

One :class:`HealthChecker` task per forward that declares ``healthcheck:``, started
by the forward itself. While the forward is ready it runs one check at a time
(never two in flight), every ``interval``, each cut at ``timeout``. ``tcp`` and
``http`` checks are connections carried over the forward's *own* link —
:meth:`Forward.carry_check` counts them in its connection totals, flagged as
checks, and keeps their endings out of the connection-error lines (a check that
closes abruptly is the check's business, not a failed user connection); ``exec``
runs a command with the forward's ``PFCOMPOSE_*`` variables, so whatever it
connects to goes through the forward's listeners.

States follow compose: ``starting`` until the first success (failures during
``start_period`` do not count), ``healthy``, ``unhealthy`` after ``retries``
consecutive failures. An event is emitted on each change of state only, never
once per interval. When the link is lost the state goes back to ``starting``:
the new pod has to prove itself again.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import h11
import trio

from pfcompose.config.healthspec import HealthSpec
from pfcompose.up.events import Event, Kind
from pfcompose.up.portsenv import env_key

if TYPE_CHECKING:
    from pfcompose.up.forward import Forward

log = logging.getLogger(__name__)

__all__ = ["TCP_SETTLE", "HealthChecker", "forward_environment", "host_key"]

TCP_SETTLE = 0.5
"""Seconds a ``tcp`` check waits for the kubelet to report a failed dial (a refused
port) when the pod side neither errs nor closes (at most half the check's timeout).
The kubelet reports a refused dial within one round trip of the stream pair."""

_MAX_RESPONSE = 64 * 1024


class CheckFailed(Exception):
    """One check failed; ``str()`` is the reason shown in ``ps`` and events."""


def host_key(forward: str) -> str:
    """``PFCOMPOSE_<FORWARD>_HOST``, named as the ports file names its keys."""
    return env_key(forward, "HOST")


def forward_environment(
    forward: str, listening: list[tuple[str, int | str, int]]
) -> dict[str, str]:
    """``PFCOMPOSE_<FORWARD>_<REMOTE>=<port>`` (first mapping wins, as the ports file)
    and ``PFCOMPOSE_<FORWARD>_HOST`` (its first loopback address, IPv4 preferred)."""
    env: dict[str, str] = {}
    addresses: list[str] = []
    for address, remote, local in listening:
        env.setdefault(env_key(forward, remote), str(local))
        addresses.append(address)
    if addresses:
        ipv4 = [a for a in addresses if ":" not in a]
        env[host_key(forward)] = (ipv4 or addresses)[0]
    return env


class HealthChecker:
    """Runs a forward's health checks for the life of the forward."""

    def __init__(self, forward: Forward, spec: HealthSpec) -> None:
        self.forward = forward
        self.spec = spec
        self._failures = 0
        self._ready_at = 0.0

    # -- state ---------------------------------------------------------------------

    def _set(self, state: str, detail: str = "") -> None:
        status = self.forward.status
        changed = status.health != state
        status.health, status.health_detail = state, detail
        if not changed:
            return
        text = f"health: {state}" + (f" ({detail})" if detail else "")
        self.forward.emit_event(Event(self.forward.spec.name, Kind.HEALTH, text,
                                      data={"health": state, "detail": detail,
                                            "check": self.spec.kind}))  # fmt: skip

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        self._set("starting")
        while True:
            while not self.forward.link_ready:
                await self.forward.wait_link_change()
            self._ready_at = time.monotonic()
            self._failures = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._check_while_ready)
                while self.forward.link_ready:
                    await self.forward.wait_link_change()
                nursery.cancel_scope.cancel()
            self._set("starting", "reconnecting")

    async def _check_while_ready(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_once()
            except CheckFailed as exc:
                self._failed(str(exc), started)
            except Exception as exc:  # a bug in a check must not end the forward
                log.exception("health check of %s crashed", self.forward.spec.name)
                self._failed(f"internal error: {type(exc).__name__}: {exc}", started)
            else:
                self._failures = 0
                self._set("healthy")
            await trio.sleep_until(trio.current_time() + self.spec.interval)

    def _failed(self, reason: str, started: float) -> None:
        if started - self._ready_at < self.spec.start_period:
            self.forward.status.health_detail = reason  # not counted: still starting
            return
        self._failures += 1
        if self._failures >= self.spec.retries:
            self._set("unhealthy", reason)
        else:
            self.forward.status.health_detail = reason

    async def check_once(self) -> None:
        """One check, cut at ``timeout``; raises CheckFailed with the reason."""
        with trio.move_on_after(self.spec.timeout) as scope:
            if self.spec.kind == "exec":
                await self._exec()
            else:
                await self._over_forward()
        if scope.cancelled_caught:
            raise CheckFailed(f"{self.spec.kind} check timed out after {self.spec.timeout:g}s")

    # -- tcp and http: through the forward's own link ---------------------------------

    def _port_index(self) -> int:
        ports = self.forward.spec.ports
        if self.spec.port is None:
            return 0
        for index, port in enumerate(ports):
            if str(port.remote) == str(self.spec.port):
                return index
        return 0

    async def _over_forward(self) -> None:
        # the stdlib's default family: AF_UNIX where there is one, loopback TCP on Windows
        ours, theirs = trio.socket.socketpair()
        mine, carried = trio.SocketStream(ours), trio.SocketStream(theirs)
        outcome: list[str | None] = []
        ended = trio.Event()

        async def carry() -> None:
            result = await self.forward.carry_check(carried, self._port_index())
            outcome.append(result.error)
            ended.set()

        failure: CheckFailed | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(carry)
                try:
                    if self.spec.kind == "tcp":
                        await self._tcp(mine, outcome, ended)
                    else:
                        await self._http(mine, outcome, ended)
                except CheckFailed as exc:  # raised outside the nursery: no exception group
                    failure = exc
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(mine)
        if failure is not None:
            raise failure

    async def _tcp(
        self, stream: trio.SocketStream, outcome: list[str | None], ended: trio.Event
    ) -> None:
        # A clean close after our half-close, or no error within the settle time,
        # means the pod accepted; a refused dial arrives as error-stream text.
        await stream.send_eof()
        with trio.move_on_after(min(TCP_SETTLE, self.spec.timeout / 2)):
            while await _receive(stream):
                pass
            await ended.wait()
        if outcome and outcome[0]:
            raise CheckFailed(_reason(outcome[0]))

    async def _http(
        self, raw: trio.SocketStream, outcome: list[str | None], ended: trio.Event
    ) -> None:
        spec = self.spec
        local = next((item.local for item in self.forward.status.listening), 0)
        host = spec.host or f"localhost:{local}"
        stream: trio.abc.Stream = raw
        if spec.https:
            context = ssl.create_default_context()
            if spec.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            server_name = (spec.host or "localhost").rsplit(":", 1)[0] if spec.host else "localhost"
            stream = trio.SSLStream(raw, context, server_hostname=server_name)
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=spec.path, headers=[
            ("Host", host), ("User-Agent", "pfcompose-healthcheck"), ("Connection", "close"),
        ])  # fmt: skip
        try:
            head = conn.send(request) or b""
            await stream.send_all(head + (conn.send(h11.EndOfMessage()) or b""))
            status = await _response_status(conn, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            await self._carry_ended(raw, ended)
            cause = exc.__cause__ or exc  # trio wraps the ssl error
            text = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
            if isinstance(cause, ssl.SSLCertVerificationError):
                text = f"certificate verify failed: {cause.verify_message}"
            raise CheckFailed(self._carry_reason(outcome) or f"http check failed: {text}") from None
        if status is None:
            await self._carry_ended(raw, ended)
            raise CheckFailed(self._carry_reason(outcome) or "http check: no response")
        if not spec.expects(status):
            raise CheckFailed(f"HTTP {status} from {spec.path} (expected {spec.expect_text()})")

    @staticmethod
    async def _carry_ended(raw: trio.SocketStream, ended: trio.Event) -> None:
        """Let the carried connection end, to learn its reason (a refused dial): our side
        is closed first, and the wait is short (the pod side may never close)."""
        await trio.aclose_forcefully(raw)
        with trio.move_on_after(TCP_SETTLE):
            await ended.wait()

    @staticmethod
    def _carry_reason(outcome: list[str | None]) -> str | None:
        return _reason(outcome[0]) if outcome and outcome[0] else None

    # -- exec ----------------------------------------------------------------------------

    async def _exec(self) -> None:
        status = self.forward.status
        listening = [(item.address, item.remote, item.local) for item in status.listening]
        env = {**os.environ, **forward_environment(self.forward.spec.name, listening)}
        try:
            done = await trio.run_process(
                list(self.spec.command), env=env, check=False, stdin=subprocess.DEVNULL,
                capture_stdout=True, capture_stderr=True,
            )  # fmt: skip
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CheckFailed(f"exec check: {self.spec.command[0]}: {reason}") from None
        if done.returncode != 0:
            last = _last_line(done.stderr) or _last_line(done.stdout)
            suffix = f": {last}" if last else ""
            raise CheckFailed(f"exec check exited {done.returncode}{suffix}")


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def _response_status(conn: h11.Connection, stream: trio.abc.Stream) -> int | None:
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise CheckFailed(f"http check: not an HTTP response ({exc})") from None
        if isinstance(event, h11.Response):
            return int(event.status_code)
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            received += len(data)
            if not data or received > _MAX_RESPONSE:
                return None
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None


def _reason(error: str) -> str:
    """The carried connection's one line, as the check's reason (``…: connection refused``)."""
    return error.split(": ", 1)[1] if error.startswith("an error occurred forwarding ") else error


def _last_line(data: bytes | None) -> str:
    text = (data or b"").decode("utf-8", "replace").strip()
    return text.splitlines()[-1][:200] if text else ""


def environment_for(listening: Mapping[str, list[tuple[str, int | str, int]]]) -> dict[str, str]:
    """Every forward's variables (``run``'s CMD environment)."""
    env: dict[str, str] = {}
    for name, entries in listening.items():
        env.update(forward_environment(name, entries))
    return env
