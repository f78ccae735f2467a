"""One forward: its listeners, its link to a pod, and the connections between them.

The listeners are bound once, at start, and stay bound for the life of the
forward. Independently, a loop keeps a *link* to a pod — resolve the target,
open a session, wait until it is lost, back off, resolve again. A connection
accepted while no link is up waits up to ``reconnect.hold`` for one, so a pod
restart looks like a slow accept, not a dead port.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import trio

from pfcompose.config.spec import ForwardSpec
from pfcompose.kube import (
    ClusterAccess,
    KubeApiError,
    KubeClient,
    KubeConfigError,
    NoReadyPod,
    PodNotRunning,
    is_ready_pod,
    pod_query,
    resolve,
)
from pfcompose.kube.permissions import forbidden_line, probe_portforward
from pfcompose.up.connection import (
    ConnStats,
    Outcome,
    Traffic,
    forward_over_channel,
    forward_over_session,
)
from pfcompose.up.connstats import closed_message, peer_of
from pfcompose.up.events import Event, EventSink, Kind
from pfcompose.up.health import HealthChecker
from pfcompose.up.listeners import BoundPort, bind_port, join_host_port, set_linger_reset
from pfcompose.wire.dial import dial_spdy, fallback_reason
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import UpgradeError
from pfcompose.wire.session import SpdySession, open_session
from pfcompose.wire.sockio import tune_socket
from pfcompose.wire.websocket import WebSocketByteStream

log = logging.getLogger(__name__)

SESSION_READ_SIZE = 4 << 20
STREAM_MAX_BUFFER = 8 << 20
"""A forward's SPDY session reads 4 MiB at a time and lets one stream hold 8 MiB (the
session's receive budget still bounds them all). With the read as large as the
stream's limit, the reader and the local writer took turns instead of overlapping.
Measured downloads through the sandbox: 1 MiB / 4 MiB took them from ~0.85 to
~1.05 × kubectl's; 4 MiB / 8 MiB from ~1.0 to ~1.15 × (512 MiB, medians of 3)."""

AccessLoader = Callable[[ForwardSpec], Awaitable[ClusterAccess]]
"""Loads cluster access for a forward; called again before every (re)connect."""


@runtime_checkable
class ForgetsAccess(Protocol):
    """An :data:`AccessLoader` that caches, told when the server refused its credentials
    (``failed``: the access refused, so that concurrent refusals re-evaluate once)."""

    def invalidate(self, spec: ForwardSpec, failed: ClusterAccess | None = None) -> None: ...


def _unauthorized(exc: Exception) -> bool:
    """401 from the API server or the upgrade: the credentials are stale (client-go
    renews exec credentials exactly then)."""
    return isinstance(exc, KubeApiError | UpgradeError) and exc.status == 401


@dataclass
class Link:
    """What connections are carried over while the forward is ready.

    SPDY transports share one session; the ``websocket`` transport opens one
    channel-protocol WebSocket per connection to ``endpoint``/``path``.
    """

    pod: str
    transport: str
    endpoint: Endpoint
    path: str
    session: SpdySession | None = None
    lost: bool = False
    fallback: str | None = None
    gone: trio.Event = field(default_factory=trio.Event)
    """Set when a connection's error stream said the pod itself is gone (issue 12 §5)."""

    @property
    def alive(self) -> bool:
        return not self.lost and (self.session is None or not self.session.closed)


class State(StrEnum):
    STARTING = "starting"
    RESOLVING = "resolving"
    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class Listening:
    address: str
    local: int
    remote: int | str


@dataclass
class ForwardStatus:
    """The truth about one forward, as the supervisor measures it (for ``ps``)."""

    name: str
    state: State = State.STARTING
    detail: str = ""
    pod: str | None = None
    namespace: str | None = None
    transport: str | None = None
    fallback: str | None = None  # why ``auto`` uses SPDY here (the tunnel failed), if it does
    listening: list[Listening] = field(default_factory=list)
    connections_open: int = 0
    connections_total: int = 0
    reconnects: int = 0
    last_error: str | None = None
    ready_since: float | None = None
    started: float = field(default_factory=time.time)
    traffic: Traffic = field(default_factory=Traffic)
    attempt: int = 0  # the current reconnect attempt (``ps``: "reconnecting n")
    waiting_for_pod: bool = False  # the last failure was "no such / no ready pod" (``ps``)
    health: str | None = None  # starting / healthy / unhealthy; None: no healthcheck
    health_detail: str = ""  # the last failed check's reason
    checks_total: int = 0  # health-check connections (also in connections_total)

    @property
    def healthy(self) -> bool | None:
        """True/False once a health check has decided (``starting`` counts as not
        healthy); None without a check — the hook metrics and ``top`` read."""
        return None if self.health is None else self.health == "healthy"


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter in its upper half: ``attempt`` counts from 1."""
    ceiling = min(maximum, initial * math.pow(2, min(attempt - 1, 30)))
    return max(initial, random.uniform(ceiling / 2, ceiling))


def _waiting_for_pod(exc: Exception, spec: ForwardSpec) -> bool:
    """No pod to forward to yet: not running, none ready, or (``pod/NAME``) gone."""
    if isinstance(exc, PodNotRunning | NoReadyPod):
        return True
    return isinstance(exc, KubeApiError) and exc.status == 404 and spec.names_a_pod


async def _until_gone(link: Link, wait: Callable[[], Awaitable[str | None]]) -> str | None:
    """``wait()``'s answer, unless a connection learns first that the pod is gone."""
    result: str | None = None
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            nonlocal result
            result = await wait()
            nursery.cancel_scope.cancel()

        async def gone() -> None:
            nonlocal result
            await link.gone.wait()
            result = "the container runtime says the pod is gone"
            nursery.cancel_scope.cancel()

        nursery.start_soon(waiter)
        nursery.start_soon(gone)
    return result


def describe(exc: BaseException) -> str:
    """One line for an error, whatever raised it (our errors already are one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Forward:
    """Runs one :class:`ForwardSpec` until cancelled (or, without reconnect, until lost)."""

    def __init__(self, spec: ForwardSpec, load_access: AccessLoader, emit: EventSink) -> None:
        self.spec = spec
        self.status = ForwardStatus(name=spec.name, transport=None)
        self._load_access = load_access
        self._emit_to = emit
        self._link: Link | None = None
        self._remote_ports: list[int] = []
        self._link_changed = trio.Event()
        self._request_ids = itertools.count()
        self._accepting = trio.CancelScope()
        self._drained = trio.Event()
        self._drained.set()
        self._bound: list[BoundPort] = []
        self._relink_now = False
        self._last_access: ClusterAccess | None = None
        self._credential_error: str | None = None

    # -- events ------------------------------------------------------------------

    def _emit(self, kind: Kind, message: str, **data: object) -> None:
        self._emit_to(Event(self.spec.name, kind, message, data=dict(data)))

    def _set_state(self, state: State, detail: str = "", **data: object) -> None:
        self.status.state = state
        self.status.detail = detail
        if state is State.FAILED:
            text = f"failed: {detail}"
        else:
            text = f"{state.value} ({detail})" if detail else state.value
        self._emit(Kind.STATE, text, state=state.value, detail=detail, **data)

    # -- the forward's life --------------------------------------------------------

    async def run(self) -> None:
        """Listen and keep a link until cancelled; returns if no listener could be opened."""
        async with trio.open_nursery() as nursery:
            listeners = await self._open_listeners()
            if not listeners:
                self._set_state(State.FAILED, self._no_listener_message())
                return
            nursery.start_soon(self._accept_all, listeners, nursery)
            if self.spec.health is not None:
                nursery.start_soon(HealthChecker(self, self.spec.health).run)
            await self._keep_linked()
            nursery.cancel_scope.cancel()

    def stop_accepting(self) -> None:
        """Close the listeners; connections already accepted go on."""
        self._accepting.cancel()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    # -- listeners -----------------------------------------------------------------

    def _no_listener_message(self) -> str:
        bound_ports = zip(self._bound, self.spec.ports, strict=True)
        pairs = " ".join(f"{{{b.local} {p.remote}}}" for b, p in bound_ports)
        return f"unable to listen on any of the requested ports: [{pairs}]"

    async def _open_listeners(self) -> list[tuple[trio.SocketListener, int, int]]:
        """Bind every port, client-go style; (listener, port index, local port) for each."""
        opened: list[tuple[trio.SocketListener, int, int]] = []
        for index, port in enumerate(self.spec.ports):
            bound, listeners = await bind_port(self.spec.listen, port.local)
            self._bound.append(bound)
            for entry, listener in listeners:
                where = join_host_port(entry.address, bound.local)
                self.status.listening.append(Listening(entry.address, bound.local, port.remote))
                self._emit(
                    Kind.LISTENING,
                    f"Forwarding from {where} -> {port.remote}",
                    address=entry.address,
                    local=bound.local,
                    remote=port.remote,
                )
                opened.append((listener, index, bound.local))
            if bound.failed:
                self._emit(Kind.LISTEN_FAILED, bound.failure_message(), local=bound.local)
        return opened

    async def _accept_all(
        self, listeners: list[tuple[trio.SocketListener, int, int]], connections: trio.Nursery
    ) -> None:
        """Accept on every listener until :meth:`stop_accepting`; connections outlive it."""
        with self._accepting:
            async with trio.open_nursery() as nursery:
                for listener, index, local in listeners:
                    nursery.start_soon(self._accept_loop, listener, index, local, connections)

    async def _accept_loop(
        self, listener: trio.SocketListener, index: int, local: int, connections: trio.Nursery
    ) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                tune_socket(stream)
                connections.start_soon(self._handle_connection, stream, index, local)

    # -- connections ---------------------------------------------------------------

    async def _current_link(self, hold: float) -> Link | None:
        """The live link, waiting up to ``hold`` seconds for one."""
        link = self._link
        if link is not None and link.alive:  # the usual case: no cancel scope to set up
            return link
        with trio.move_on_after(hold):
            while self._link is None or not self._link.alive:
                await self._link_changed.wait()
            return self._link
        return None

    async def _handle_connection(self, stream: trio.SocketStream, index: int, local: int) -> None:
        self.status.connections_open += 1
        self.status.connections_total += 1
        self._drained = trio.Event() if self._drained.is_set() else self._drained
        quiet = self.spec.quiet_connections
        self._emit(Kind.CONNECTION, f"Handling connection for {local}", local=local, quiet=quiet)
        conn = ConnStats(peer_of(stream), local)
        outcome = Outcome()
        try:
            link = await self._current_link(self.spec.reconnect.hold)
            if link is None:
                reason = self.status.last_error or self.status.state.value
                self._emit(
                    Kind.CONNECTION_ERROR,
                    f"closing connection for {local}: no session to the pod within "
                    f"{self.spec.reconnect.hold:g}s ({reason})",
                    local=local,
                )
                outcome = Outcome(f"no session to the pod within {self.spec.reconnect.hold:g}s")
                set_linger_reset(stream)
                await trio.aclose_forcefully(stream)
                return
            try:
                outcome = await self._carry(link, stream, index, local, conn)
            except Exception as exc:  # one connection's bug must not end the forward
                log.exception("connection for %s crashed", local)
                await trio.aclose_forcefully(stream)
                outcome = Outcome(f"connection for {local} failed: {describe(exc)}")
            if outcome.error:
                self._emit(Kind.CONNECTION_ERROR, outcome.error, local=local)
            if outcome.pod_gone and link is self._link and not link.gone.is_set():
                # the runtime says the pod's sandbox is gone: re-resolve now, not at the
                # next missed ping; new connections wait for the new link meanwhile
                self._relink_now = True
                self._publish(None)
                link.gone.set()
        finally:
            self.status.connections_open -= 1
            if self.status.connections_open == 0:
                self._drained.set()
            record = self.status.traffic.finish(conn, outcome)
            self._emit(Kind.CONNECTION_CLOSED, closed_message(record), **record)

    async def _carry(
        self, link: Link, stream: trio.SocketStream, index: int, local: int, conn: ConnStats
    ) -> Outcome:
        remote = self._remote_ports[index]
        if link.session is not None:
            return await forward_over_session(
                link.session,
                stream,
                local_port=local,
                remote_port=remote,
                request_id=next(self._request_ids),
                traffic=self.status.traffic,
                conn=conn,
            )
        return await forward_over_channel(
            self._fresh_endpoint,
            link.path,
            stream,
            local_port=local,
            remote_port=remote,
            traffic=self.status.traffic,
            conn=conn,
        )

    async def _fresh_endpoint(self, renew: bool) -> Endpoint:
        """The ``websocket`` transport dials per connection: with the credential current
        now (the cache renews an expiring one), re-evaluated after a 401 (``renew``)."""
        if renew:
            self._forget_access(self._last_access)
        try:
            access = await self._load_access(self.spec)
        except KubeConfigError as exc:  # the forward stays ready; ``ps`` says why dials fail
            self._credential_error = self.status.last_error = describe(exc)
            raise
        if self._credential_error is not None and self.status.last_error == self._credential_error:
            self.status.last_error = None
        self._credential_error = None
        self._last_access = access
        return access.endpoint

    def _forget_access(self, failed: ClusterAccess | None) -> None:
        if isinstance(self._load_access, ForgetsAccess):
            self._load_access.invalidate(self.spec, failed)

    # -- health checks (health.py) ---------------------------------------------------

    def emit_event(self, event: Event) -> None:
        self._emit_to(event)

    @property
    def link_ready(self) -> bool:
        return self._link is not None and self._link.alive

    async def wait_link_change(self) -> None:
        await self._link_changed.wait()

    async def carry_check(self, stream: trio.SocketStream, index: int) -> Outcome:
        """Carry a health check's connection over this forward's own link.

        It counts in the connection totals (and in ``checks_total``); how it ended is
        returned to the checker, never reported as a failed connection.
        """
        link = self._link
        if link is None or not link.alive or index >= len(self._remote_ports):
            await trio.aclose_forcefully(stream)
            return Outcome("no session to the pod")
        self.status.connections_open += 1
        self.status.connections_total += 1
        self.status.checks_total += 1
        self._drained = trio.Event() if self._drained.is_set() else self._drained
        local = self._bound[index].local if index < len(self._bound) else 0
        conn = ConnStats("health check", local)
        outcome = Outcome()
        try:
            outcome = await self._carry(link, stream, index, local, conn)
            return outcome
        except Exception as exc:  # as _handle_connection: the forward goes on
            await trio.aclose_forcefully(stream)
            outcome = Outcome(f"check connection failed: {describe(exc)}")
            return outcome
        finally:
            self.status.connections_open -= 1
            if self.status.connections_open == 0:
                self._drained.set()
            # counted with the others (metrics, top), flagged as a check in the log
            record = {**self.status.traffic.finish(conn, outcome), "check": True}
            self._emit(Kind.CONNECTION_CLOSED, closed_message(record), **record)

    # -- the link ------------------------------------------------------------------

    def _publish(self, link: Link | None) -> None:
        if self._link is not None and link is None:
            self._link.lost = True
        self._link = link
        self._link_changed.set()
        self._link_changed = trio.Event()

    async def _keep_linked(self) -> None:
        policy = self.spec.reconnect
        attempt = 0
        renewed = False  # a 401 was answered by re-evaluating; the next one backs off
        while True:
            was_ready = False
            try:
                was_ready = await self._link_once()
                self.status.waiting_for_pod = False
            except Exception as exc:  # every failure is reported, then retried
                self.status.waiting_for_pod = _waiting_for_pod(exc, self.spec)
                if _unauthorized(exc) and isinstance(self._load_access, ForgetsAccess):
                    self._forget_access(self._last_access)
                    if not renewed:  # client-go: re-evaluate once and retry at once
                        renewed = True
                        continue
                message = forbidden_line(exc) or describe(exc)
                if message != self.status.last_error:
                    self._emit(Kind.ERROR, message)
                self.status.last_error = message
            finally:
                self._publish(None)
                self.status.ready_since = None
            renewed = renewed and not was_ready
            if not policy.enabled:
                self._set_state(State.FAILED, self.status.last_error or "lost connection to pod")
                return
            if self._relink_now:  # the pod is gone: resolve again at once (no backoff)
                self._relink_now = False
                attempt = 0
                self.status.reconnects += 1
                continue
            attempt = 1 if was_ready else attempt + 1
            self.status.attempt = attempt
            self.status.reconnects += 1
            delay = backoff_delay(attempt, policy.initial_backoff, policy.max_backoff)
            self._set_state(
                State.RECONNECTING,
                f"attempt {attempt}, next in {delay:.1f}s",
                attempt=attempt,
                delay=round(delay, 3),
            )
            await self._wait_before_retry(delay)

    async def _wait_before_retry(self, delay: float) -> None:
        """Sleep ``delay`` — but wake early when a pod that could serve us appears.

        A pod restart then costs one watch event, not a backoff period: the wait
        watches the target's pods from the resourceVersion of a fresh LIST (so old
        pods do not wake it) and returns as soon as a usable pod is added or changed.
        The first ``initial_backoff`` is always slept, so nothing can spin.
        """
        await trio.sleep(min(delay, self.spec.reconnect.initial_backoff))
        with trio.move_on_after(max(0.0, delay - self.spec.reconnect.initial_backoff)):
            try:
                await self._until_pod_usable()
            except Exception:  # no watch (API down, forbidden…): plain backoff
                await trio.sleep_forever()

    async def _until_pod_usable(self) -> None:
        access = await self._load_access(self.spec)
        namespace = self.spec.namespace or access.namespace or "default"
        client = KubeClient(access.endpoint)
        query = await pod_query(client, self.spec, namespace)
        path = f"/api/v1/namespaces/{namespace}/pods"
        listed = await client.get(path, query)
        version = str(listed.get("metadata", {}).get("resourceVersion", ""))
        wants_running_only = self.spec.names_a_pod
        async with aclosing(client.watch(path, {**query, "resourceVersion": version})) as events:
            async for event in events:
                pod = event.get("object") or {}
                if event.get("type") not in ("ADDED", "MODIFIED"):
                    continue
                if wants_running_only:
                    if pod.get("status", {}).get("phase") == "Running":
                        return
                elif is_ready_pod(pod):
                    return
        await trio.sleep_forever()  # the server ended the watch: wait out the backoff

    async def _link_once(self) -> bool:
        """Resolve, connect, serve until the session is lost; True if it became ready."""
        self._set_state(State.RESOLVING)
        access = await self._load_access(self.spec)
        self._last_access = access
        namespace = self.spec.namespace or access.namespace or "default"
        client = KubeClient(access.endpoint)
        target = await resolve(client, self.spec, namespace)
        self._remote_ports = [remote for _, remote in target.ports]
        self.status.pod, self.status.namespace = target.pod, target.namespace
        self._set_state(State.CONNECTING, f"pod {target.pod}")
        path = (
            f"{access.path_prefix}/api/v1/namespaces/{target.namespace}"
            f"/pods/{target.pod}/portforward"
        )
        if self.spec.transport == "websocket":
            # ready must mean a port-forward is allowed: one upgrade before saying so
            await probe_portforward(access.endpoint, path, self._remote_ports[0])
            link = Link(target.pod, "websocket", access.endpoint, path)
            self._became_ready(link)
            reason = await _until_gone(link, lambda: self._watch_pod(target.namespace, target.pod))
        else:
            upgraded, used = await dial_spdy(access.endpoint, path, self.spec.transport)
            if isinstance(upgraded, WebSocketByteStream):  # the tunnel reads as much
                upgraded.ws.receive_size = SESSION_READ_SIZE
            keepalive = self.spec.keepalive
            async with open_session(
                upgraded,
                "client",
                keepalive=keepalive,
                read_size=SESSION_READ_SIZE,
                max_buffer=STREAM_MAX_BUFFER,
            ) as session:
                link = Link(target.pod, used, access.endpoint, path, session)
                if used == "spdy" and self.spec.transport == "auto":
                    link.fallback = fallback_reason(access.endpoint)
                self._became_ready(link)
                reason = await _until_gone(link, session.wait_closed)
                reason = reason or session.close_reason or "session closed"
        message = f"lost connection to pod {target.pod}: {reason}"
        self.status.last_error = message
        self._emit(Kind.ERROR, message)
        return True

    def _became_ready(self, link: Link) -> None:
        self.status.transport = link.transport
        self.status.fallback = link.fallback
        self.status.ready_since = time.time()
        self._publish(link)
        detail = f"pod {link.pod} via {link.transport}"
        if link.fallback:
            detail += f"; fell back: {link.fallback}"
        extra = {"fallback": link.fallback} if link.fallback else {}
        self._set_state(State.READY, detail, pod=link.pod, **extra)

    async def _watch_pod(self, namespace: str, pod: str) -> str:
        """For the ``websocket`` transport, which has no session to lose: poll the pod
        every ``keepalive`` seconds (with the credential current then) and report why it
        stopped being usable."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
        while True:
            await trio.sleep(self.spec.keepalive)
            try:
                access = await self._load_access(self.spec)
                obj = await KubeClient(access.endpoint).get(path)
            except KubeApiError as exc:
                if exc.status == 404:
                    return "pod is gone"
                if exc.status == 401:
                    self._forget_access(access)
                continue
            except Exception:  # the API server is unreachable: the pod may be fine
                continue
            if self.spec.names_a_pod:
                if obj.get("status", {}).get("phase") != "Running":
                    return "pod is not running"
            elif not is_ready_pod(obj):
                return "pod is not ready"
