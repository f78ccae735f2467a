"""The supervisor: one trio nursery that owns every forward of a project.

One forward failing never stops another. Stopping is two-staged, as people
expect from compose: the first Ctrl-C/SIGTERM closes the listeners, lets open
connections finish for up to ``grace`` seconds, then closes the sessions; a
second one cancels everything at once. Forwards can be added, restarted and
removed while it runs (``up -d`` again, ``restart``, ``down NAME``), each in its
own cancel scope inside the one nursery.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import trio

from pfcompose.config import ForwardSpec
from pfcompose.exitcodes import ExitCode
from pfcompose.up.events import Event, EventSink, Kind
from pfcompose.up.forward import AccessLoader, Forward, ForwardStatus, State
from pfcompose.up.resources import release_free_memory

log = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds open connections get to finish after a stop request."""

IDLE_TRIM_INTERVAL = 30.0
"""Seconds between looks at whether the forwarder went idle (see ``release_memory_when_idle``)."""

_FOREGROUND_STOPPING = "Gracefully stopping... (press Ctrl+C again to force)"


def _foreground_stopping(reason: str | None) -> str:
    """The line a foreground ``up`` prints as it stops; ``reason`` when not a signal."""
    if reason is None:
        return _FOREGROUND_STOPPING
    return f"Gracefully stopping ({reason})... (press Ctrl+C again to force)"


async def release_memory_when_idle(
    statuses: Callable[[], Iterable[ForwardStatus]],
    *,
    interval: float = IDLE_TRIM_INTERVAL,
    release: Callable[[], object] = release_free_memory,
) -> None:
    """Hand freed heap memory back once connections have come and gone.

    While data flows, the heap keeps freed buffers for reuse
    (:func:`~pfcompose.up.resources.keep_freed_buffers`); a forwarder that moved a
    burst and then sits idle for hours should not keep holding them. Every
    ``interval`` seconds: if connections were made since the last release and none
    is open now, release. An idle forwarder that saw no traffic does nothing.
    """
    released_at = 0
    while True:
        await trio.sleep(interval)
        now = list(statuses())
        total = sum(status.connections_total for status in now)
        if total != released_at and not any(status.connections_open for status in now):
            released_at = total
            release()


@dataclass
class ReconcileResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class _Running:
    forward: Forward
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)


class Supervisor:
    """Runs forwards side by side until stopped or, unless ``persistent``, until all ended."""

    def __init__(
        self,
        specs: Iterable[ForwardSpec],
        load_access: AccessLoader,
        *,
        emit: EventSink,
        grace: float = STOP_GRACE,
        persistent: bool = False,
    ) -> None:
        self._specs = list(specs)
        self._load_access = load_access
        self._emit = emit
        self._grace = grace
        self._persistent = persistent
        self._running: dict[str, _Running] = {}
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._stop_reason: str | None = None
        self._stopped_by_request = False
        self._forced = False
        self._scope: trio.CancelScope | None = None

    @property
    def forwards(self) -> list[Forward]:
        return [running.forward for running in self._running.values()]

    @property
    def statuses(self) -> list[ForwardStatus]:
        return [f.status for f in self.forwards]

    @property
    def stop_requested(self) -> bool:
        """A stop has begun (a second :meth:`request_stop` would force it)."""
        return self._stop_requested.is_set()

    def request_stop(self, reason: str | None = None) -> None:
        """Begin a graceful stop; a second call forces an immediate one. ``reason``
        (``"pfcompose down"``) is named in the stopping line; a signal needs none."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._stop_requested.is_set():
            self._forced = True
            if self._scope is not None:
                self._scope.cancel()
        self._stop_requested.set()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
    ) -> ExitCode:
        async with trio.open_nursery() as outer:
            self._scope = outer.cancel_scope
            if handle_signals:
                outer.start_soon(self._watch_signals)
            outer.start_soon(self._stop_when_requested, outer)
            outer.start_soon(release_memory_when_idle, lambda: self.statuses)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for spec in self._specs:
                    self._start(spec)
                if self._persistent:
                    nursery.start_soon(trio.sleep_forever)
                task_status.started(self)
            outer.cancel_scope.cancel()
        self._nursery = None
        if self._forced:
            return ExitCode.INTERRUPTED
        if self._stopped_by_request or not self._specs:
            return ExitCode.OK
        # Every forward ended on its own: none could listen, or (reconnect disabled)
        # each lost its pod, which kubectl also reports with status 1.
        return ExitCode.FAILURE

    # -- changing the set of forwards while running ------------------------------------

    def _start(self, spec: ForwardSpec) -> None:
        assert self._nursery is not None, "the supervisor is not running"
        running = _Running(Forward(spec, self._load_access, self._emit), trio.CancelScope())
        self._running[spec.name] = running
        self._nursery.start_soon(self._run_forward, running)

    async def _run_forward(self, running: _Running) -> None:
        forward = running.forward
        try:
            with running.scope:
                await forward.run()
        except Exception as exc:  # a bug in one forward must not take the others down
            forward.status.state = State.FAILED
            forward.status.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self._emit(Event(forward.spec.name, Kind.ERROR, forward.status.last_error))
            self._emit(
                Event(
                    forward.spec.name,
                    Kind.STATE,
                    "failed: internal error",
                    data={"state": "failed"},
                )
            )
            log.exception("forward %s crashed", forward.spec.name)
        finally:
            running.done.set()

    async def stop_forward(self, name: str) -> bool:
        """Stop one forward gracefully (listeners closed, connections get the grace)."""
        running = self._running.pop(name, None)
        if running is None:
            return False
        running.forward.stop_accepting()
        with trio.move_on_after(self._grace):
            await running.forward.wait_drained()
        running.scope.cancel()
        await running.done.wait()
        running.forward.status.state = State.STOPPED
        self._emit(Event(name, Kind.STATE, "stopped", data={"state": "stopped"}))
        return True

    async def restart(self, names: Iterable[str] | None = None) -> list[str]:
        """Restart the named forwards (all if None) with their current specs."""
        chosen = list(self._running) if names is None else [n for n in names if n in self._running]
        with self._kept_open():
            for name in chosen:
                spec = self._running[name].forward.spec
                await self.stop_forward(name)
                self._start(spec)
        return chosen

    @contextlib.contextmanager
    def _kept_open(self) -> Iterator[None]:
        """Keep the forwards' nursery open while forwards are swapped: a foreground
        supervisor (not ``persistent``) would otherwise end with its last forward."""
        release = trio.Event()
        if self._nursery is not None:
            self._nursery.start_soon(release.wait)
        try:
            yield
        finally:
            release.set()

    async def reconcile(self, specs: Mapping[str, ForwardSpec]) -> ReconcileResult:
        """Make the running set match ``specs``; unchanged forwards are not touched."""
        result = ReconcileResult()
        for name in list(self._running):
            if name not in specs:
                await self.stop_forward(name)
                result.removed.append(name)
        for name, spec in specs.items():
            current = self._running.get(name)
            if current is None:
                self._start(spec)
                result.added.append(name)
            elif current.forward.spec != spec:
                await self.stop_forward(name)
                self._start(spec)
                result.changed.append(name)
            else:
                result.unchanged.append(name)
        self._specs = list(specs.values())
        return result

    # -- stopping ----------------------------------------------------------------------

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.request_stop()

    async def _stop_when_requested(self, outer: trio.Nursery) -> None:
        await self._stop_requested.wait()
        self._stopped_by_request = True
        # A daemon is stopped by ``down`` or SIGTERM, never by a Ctrl-C in its log.
        text = "stopping" if self._persistent else _foreground_stopping(self._stop_reason)
        self._emit(Event("", Kind.STATE, text, data={"state": "stopping"}))
        for forward in self.forwards:
            forward.stop_accepting()
        with trio.move_on_after(self._grace):
            for forward in self.forwards:
                await forward.wait_drained()
        for forward in self.forwards:
            forward.status.state = State.STOPPED
        outer.cancel_scope.cancel()
