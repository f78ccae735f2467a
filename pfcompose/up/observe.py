"""Looking at a running project from outside: pushed snapshots, metrics, a foreground channel.

* ``subscribe`` (a control-channel request of the daemon and of a foreground ``up``):
  the supervisor pushes a snapshot of every forward's counters every ``interval``
  seconds (at most 4 a second) until the client goes away — ``pfcompose top``
  never polls and never asks the kernel.
* :func:`run_metrics`: the Prometheus endpoint (:mod:`pfcompose.up.metrics`) beside
  the supervisor, in the daemon and in a foreground ``up``.
* :func:`wait_for_forwards` (``wait``, of the daemon and of a foreground ``up``):
  answer once the forwards are listening, or ready and healthy, woken by
  :class:`Changes` rather than polling.
* :class:`ForegroundControl`: a foreground ``up``'s control channel on a socket of
  its own (:func:`~pfcompose.daemon.control.foreground_paths`), held with a lock as
  the daemon's: ``info``, ``ps``, ``subscribe``, ``wait``, ``logs``, ``restart`` and
  ``down``, so ``pfcompose down`` in another terminal stops it as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from pfcompose.up.connstats import project_snapshot
from pfcompose.up.events import Event, EventSink, Kind

if TYPE_CHECKING:
    from pfcompose.config.spec import ForwardSpec, Plan
    from pfcompose.daemon.control import Reply
    from pfcompose.daemon.eventlog import EventLog
    from pfcompose.up.forward import ForwardStatus
    from pfcompose.up.supervisor import Supervisor

__all__ = [
    "MIN_INTERVAL",
    "Changes",
    "ForegroundControl",
    "Watch",
    "observing",
    "run_metrics",
    "subscribe",
    "wait_for_forwards",
]

MIN_INTERVAL = 0.25
"""Fastest push a subscriber may ask for: ``top`` refreshes at most 4 times a second."""
MAX_INTERVAL = 10.0


async def subscribe(
    project: str,
    statuses: Callable[[], Sequence[ForwardStatus]],
    specs: Callable[[], Mapping[str, ForwardSpec]],
    args: Mapping[str, Any],
    send: Reply,
    stopping: trio.Event,
) -> dict[str, Any]:
    """Push ``{"snapshot": ...}`` every ``args.interval`` seconds until the client goes
    away, ``stopping`` is set or ``args.count`` pushes were made."""
    names = [str(name) for name in args.get("names") or ()]
    interval = min(MAX_INTERVAL, max(MIN_INTERVAL, float(args.get("interval") or 1.0)))
    count = args.get("count")
    pushed = 0
    while not stopping.is_set():
        await send({"snapshot": project_snapshot(project, statuses(), specs(), names)})
        pushed += 1
        if isinstance(count, int) and pushed >= count:
            break
        with trio.move_on_after(interval):
            await stopping.wait()
    return {"pushed": pushed}


class Changes:
    """An event sink that wakes waiters whenever anything happened."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def __call__(self, event: Event) -> None:
        self.wake()

    def wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


async def wait_for_forwards(
    records: Callable[[], list[dict[str, Any]]],
    changes: Changes,
    closing: trio.Event,
    args: Mapping[str, Any],
) -> dict[str, Any]:
    """Answer ``wait``: once every forward is past starting (``until: listening``) or
    ready, and healthy where it has a health check (``until: ready``); or at
    ``timeout``, when one gave up, or when the project stops (``satisfied`` false)."""
    from pfcompose.daemon.status import gave_up, is_ready

    until = args.get("until", "listening")
    timeout = float(args.get("timeout", 60.0))
    satisfied = False
    with trio.move_on_after(timeout):
        while True:
            current = records()
            if until == "ready":
                satisfied = all(is_ready(r) for r in current)
                if satisfied or any(gave_up(r) for r in current):
                    break
            else:
                satisfied = all(r["state"] != "starting" for r in current)
                if satisfied:
                    break
            if closing.is_set():
                break
            await changes.wait()
    return {"satisfied": satisfied, "forwards": records()}


class Watch:
    """What a foreground ``up`` keeps of its events for others: a :class:`Changes` for
    ``wait`` and the bounded ring of an :class:`~pfcompose.daemon.eventlog.EventLog`
    (no file: ``--log-file`` is the file) for ``logs``. One sink of the supervisor."""

    def __init__(self) -> None:
        from pfcompose.daemon.eventlog import EventLog

        self.changes = Changes()
        self.events: EventLog = EventLog()

    def __call__(self, event: Event) -> None:
        self.events(event)
        self.changes.wake()


# -- metrics -----------------------------------------------------------------------------------


async def run_metrics(
    listen: str,
    snapshot: Callable[[], Mapping[str, Any]],
    emit: EventSink,
    *,
    task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve metrics on ``listen`` until cancelled; a port that cannot be bound is one
    error line (the forwards go on without metrics)."""
    from pfcompose.up.metrics import bind_metrics, listener_url, serve_metrics

    try:
        listener = await bind_metrics(listen)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        emit(Event("", Kind.ERROR, f"metrics: unable to listen on {listen}: {reason}"))
        task_status.started(None)
        return
    url = listener_url(listener)
    emit(Event("", Kind.STATE, f"Serving metrics on {url}", data={"metrics": url}))
    task_status.started(url)
    await serve_metrics(listener, snapshot)


# -- a foreground up's control channel ---------------------------------------------------------


class ForegroundControl:
    """The requests a foreground ``up`` answers (the daemon answers these and
    ``reconcile``): what a project running in a terminal needs from another one."""

    def __init__(
        self,
        plan: Plan,
        supervisor: Supervisor,
        watch: Watch,
        stopping: trio.Event,
    ) -> None:
        from pfcompose.daemon.control import InFlight

        self.plan = plan
        self.supervisor = supervisor
        self.changes = watch.changes
        self.events = watch.events
        self.stopping = stopping
        """Set once the supervisor has stopped: its forwards are closed."""
        self.in_flight = InFlight()
        self.started = time.time()

    def _specs(self) -> dict[str, ForwardSpec]:
        return {forward.spec.name: forward.spec for forward in self.supervisor.forwards}

    def _statuses(self) -> list[ForwardStatus]:
        from pfcompose.daemon.status import in_file_order

        return in_file_order(self.supervisor.statuses, self.plan.forwards)

    def _records(self, names: Sequence[str] = ()) -> list[dict[str, Any]]:
        from pfcompose.daemon.status import status_records

        return status_records(self._statuses(), self._specs(), names)

    def _check(self, names: Sequence[str]) -> None:
        from pfcompose.daemon.control import ControlError

        unknown = [name for name in names if name not in self._specs()]
        if unknown:
            raise ControlError(f"no such forward: {', '.join(unknown)}")

    async def handle(self, op: str, args: dict[str, Any], send: Reply) -> Any:
        """One request; a bug answering it is an error answer, never the end of ``up``."""
        from pfcompose.daemon.control import ControlError

        try:
            return await self._handle(op, args, send)
        except (ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception as exc:
            raise ControlError(f"internal error: {type(exc).__name__}: {exc}") from exc

    async def _handle(self, op: str, args: dict[str, Any], send: Reply) -> Any:
        from pfcompose.daemon.control import ControlError

        names = [str(name) for name in args.get("names") or ()]
        self._check(names)  # a typo is an error, not an empty answer (as the daemon)
        if op == "info":
            return {
                "project": self.plan.name,
                "pid": os.getpid(),
                "foreground": True,
                "files": [str(f) for f in self.plan.files],
                "forwards": len(self.supervisor.forwards),
                "started": self.started,
            }
        if self.stopping.is_set():
            raise ControlError(f"project {self.plan.name} is stopping")
        if op == "ps":
            return {"project": self.plan.name, "forwards": self._records(names)}
        if op == "subscribe":
            return await subscribe(
                self.plan.name, self._statuses, self._specs, args, send, self.stopping
            )
        if op == "wait":
            records = functools.partial(self._records, names)
            return await wait_for_forwards(records, self.changes, self.stopping, args)
        if op == "logs":
            from pfcompose.daemon.eventlog import answer_logs

            return await answer_logs(self.events, args, send, self.stopping)
        if op == "restart":
            return {"restarted": await self.supervisor.restart(names or None)}
        if op == "down":
            return await self._down(names)
        raise ControlError(f"unknown request {op!r} (a foreground up answers info, ps, "
                           "subscribe, wait, logs, restart and down)")  # fmt: skip

    async def _down(self, names: Sequence[str]) -> dict[str, Any]:
        """Stop the forwards named; none, or every one running: stop ``up`` as Ctrl-C
        does, and answer once its forwards are closed (``up`` then exits 0)."""
        running = [forward.spec.name for forward in self.supervisor.forwards]
        if names and not set(running) <= set(names):
            stopped = [name for name in names if await self.supervisor.stop_forward(name)]
            return {"stopped": stopped, "exited": False}
        if not self.supervisor.stop_requested:  # a second one would force the stop
            self.supervisor.request_stop(reason="pfcompose down")
        await self.stopping.wait()
        return {"stopped": running, "exited": True}


async def _serve_foreground(
    control: ForegroundControl,
    emit: EventSink,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold the foreground lock and serve its socket; no lock or socket: go on without."""
    from pfcompose.daemon.control import (
        ControlError,
        DaemonLock,
        bind_socket,
        foreground_paths,
        serve,
    )

    try:
        paths = foreground_paths(control.plan.name)
    except (ControlError, OSError) as exc:
        emit(Event("", Kind.WARNING, f"no control channel for top: {exc}"))
        task_status.started()
        return
    lock = DaemonLock(paths.lock)
    try:
        if not lock.try_acquire():
            # Another foreground up of this project has it (and top shows that one);
            # not worth a line on every run of a second one.
            task_status.started()
            return
        listener = await bind_socket(paths.socket)
    except OSError as exc:
        lock.release()
        emit(Event("", Kind.WARNING, f"no control channel for top: {exc}"))
        task_status.started()
        return
    try:
        await serve(listener, control.handle, in_flight=control.in_flight, task_status=task_status)
    finally:
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        lock.release()


ANSWER_GRACE = 2.0
"""How long a stopping ``up`` waits for answers in flight (``down`` hears the stop)."""


@contextlib.asynccontextmanager
async def observing(
    plan: Plan, supervisor: Supervisor, emit: EventSink, watch: Watch
) -> AsyncIterator[None]:
    """Metrics (if the plan asks) and a foreground ``up``'s control channel, for as long
    as the body (the supervisor) runs; ``watch`` is one of the supervisor's sinks."""
    stopping = trio.Event()
    control = ForegroundControl(plan, supervisor, watch, stopping)
    async with trio.open_nursery() as nursery:
        if plan.metrics:
            snapshot = functools.partial(_snapshot, plan, supervisor)
            await nursery.start(functools.partial(run_metrics, plan.metrics, snapshot, emit))
        await nursery.start(functools.partial(_serve_foreground, control, emit))
        try:
            yield
        finally:
            stopping.set()
            watch.changes.wake()  # ends every ``wait``
            watch.events.close()  # ends every ``logs -f``
            with trio.move_on_after(ANSWER_GRACE):
                await control.in_flight.wait_idle()  # ``down`` hears that the stop is done
            nursery.cancel_scope.cancel()


def _snapshot(plan: Plan, supervisor: Supervisor) -> dict[str, Any]:
    specs = {forward.spec.name: forward.spec for forward in supervisor.forwards}
    return project_snapshot(plan.name, supervisor.statuses, specs)
