"""``up -d``: one supervisor process per project that outlives the shell.

The CLI starts a lean interpreter (as ``up``'s foreground runtime, see
:mod:`pfcompose.up.runtime`) in a new session (so the terminal's Ctrl-C and hang-up
do not reach it), hands it a :class:`Launch` on stdin and reads
exactly one line back on a pipe: ``{"ok": true, "pid": …}`` once the control socket
is listening and the forwards are starting, or ``{"ok": false, "error": …}``. There
is no polling for a socket to appear. From then on everything — ``ps``, ``logs``,
``down``, reconciling after the file changed — goes through the control socket
(:mod:`pfcompose.daemon.control`), and the daemon answers from the supervisor's own state.

The CLI sends the plan it validated (and printed any problem of) and the
kubeconfig contexts it evaluated, so what runs is exactly what ``pfcompose
config`` shows, and the daemon never imports pydantic or the kubernetes package.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio

from pfcompose import __version__
from pfcompose.config.spec import ForwardSpec, Plan
from pfcompose.daemon.control import (
    ControlError,
    DaemonLock,
    InFlight,
    ProjectPaths,
    Reply,
    bind_socket,
    project_paths,
    serve,
)
from pfcompose.daemon.eventlog import EventLog, EventLogFile, answer_logs
from pfcompose.daemon.status import in_file_order, status_records
from pfcompose.kube.cache import Evaluator, evaluate_in_subprocess
from pfcompose.platform import O_CLOEXEC, ipc
from pfcompose.platform.process import detach_options
from pfcompose.up.connstats import project_snapshot
from pfcompose.up.events import Event, EventSink, fan_out
from pfcompose.up.forward import ForwardStatus
from pfcompose.up.launch import Launch, import_path, lean_argv
from pfcompose.up.observe import Changes, run_metrics, subscribe, wait_for_forwards
from pfcompose.up.portsenv import PortsEnvFile
from pfcompose.up.resources import keep_freed_buffers, raise_open_file_limit, release_free_memory
from pfcompose.up.runtime import forward_access
from pfcompose.up.supervisor import Supervisor

__all__ = ["READY_TIMEOUT", "Daemon", "daemon_main", "spawn"]

READY_TIMEOUT = 30.0
"""How long ``up -d`` waits for the daemon's ready line before giving up."""


class Daemon:
    """The daemon's state and its control-socket request handler."""

    def __init__(
        self, launch: Launch, plan: Plan, paths: ProjectPaths, evaluate: Evaluator
    ) -> None:
        self.launch = launch
        self.plan = plan
        self.paths = paths
        self.started = time.time()
        self.log_path = launch.log_file or paths.log
        self.events = EventLog(file=EventLogFile(self.log_path))
        ports_env = launch.ports_env or plan.ports_env
        self.ports_env = PortsEnvFile(ports_env, plan.name) if ports_env else None
        self.changes = Changes()
        sinks: list[EventSink] = [self.events, self._to_ports_env, self.changes]
        self.order = list(plan.forwards)
        self.access = forward_access(launch, evaluate)
        self.emit = fan_out(*sinks)
        self.supervisor = Supervisor(
            plan.forwards.values(),
            self.access,
            emit=self.emit,
            persistent=True,
        )
        self.stopped = trio.Event()
        self.closing = trio.Event()
        self.in_flight = InFlight()

    def _seed(self, launch: Launch) -> None:
        """Use what the command line evaluated; it shares our kubeconfig and context."""
        if (launch.kubeconfig, launch.context) != (self.launch.kubeconfig, self.launch.context):
            return
        self.access.cache.seed(launch.materials)

    def _to_ports_env(self, event: Event) -> None:
        if self.ports_env is not None:
            self.ports_env(event)

    # -- running -------------------------------------------------------------------

    async def run(self, listener: ipc.ControlListener, ready: Reply) -> None:
        async with self.access.cache.renewing_in_background(), trio.open_nursery() as nursery:
            await nursery.start(self._supervise)
            if self.plan.metrics:  # the address it started with (up -d again keeps it)
                snapshot = functools.partial(self.snapshot, ())
                await nursery.start(run_metrics, self.plan.metrics, snapshot, self.emit)
            await nursery.start(
                functools.partial(serve, listener, self.handle, in_flight=self.in_flight)
            )
            await ready({"ok": True, "pid": os.getpid(), "socket": str(self.paths.socket)})
            await self.stopped.wait()
            self.closing.set()
            self.changes.wake()  # ends every ``wait``
            self.events.close()  # ends every ``logs -f`` stream
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            if self.ports_env is not None:
                self.ports_env.remove()
            with trio.move_on_after(2.0):
                await self.in_flight.wait_idle()  # ``down`` hears that the stop is complete
            nursery.cancel_scope.cancel()

    async def _supervise(self, task_status: trio.TaskStatus[Supervisor]) -> None:
        try:
            await self.supervisor.run(handle_signals=True, task_status=task_status)
        finally:
            self.stopped.set()

    # -- the protocol ----------------------------------------------------------------

    async def handle(self, op: str, args: dict[str, Any], send: Reply) -> Any:
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise ControlError(f"unknown request {op!r}")
        if self.closing.is_set() and op != "info":
            raise ControlError(f"project {self.plan.name} is stopping")
        return await method(args, send)

    def _specs(self) -> dict[str, ForwardSpec]:
        return {forward.spec.name: forward.spec for forward in self.supervisor.forwards}

    def records(self, names: Sequence[str] = ()) -> list[dict[str, Any]]:
        return status_records(self._ordered(), self._specs(), names)

    def _ordered(self) -> list[ForwardStatus]:
        return in_file_order(self.supervisor.statuses, self.order)

    def snapshot(self, names: Sequence[str] = ()) -> dict[str, Any]:
        """Every forward's counters (what metrics render and ``subscribe`` pushes)."""
        return project_snapshot(self.plan.name, self._ordered(), self._specs(), names)

    async def op_subscribe(self, args: dict[str, Any], send: Reply) -> Any:
        """``top``: push snapshots until the client goes away or the daemon stops."""
        self._check_names(list(args.get("names") or ()))
        return await subscribe(self.plan.name, self._ordered, self._specs, args, send, self.closing)

    def _check_names(self, names: Sequence[str]) -> None:
        known = self._specs()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ControlError(f"no such forward: {', '.join(unknown)}")

    async def op_info(self, args: dict[str, Any], send: Reply) -> Any:
        return {
            "project": self.plan.name,
            "pid": os.getpid(),
            "version": __version__,
            "files": [str(f) for f in self.plan.files],
            "project_directory": str(self.plan.project_directory),
            "forwards": len(self.supervisor.forwards),
            "started": self.started,
            "socket": str(self.paths.socket),
            "log_file": str(self.log_path),
            "ports_env": str(self.ports_env.path) if self.ports_env else None,
        }

    async def op_ps(self, args: dict[str, Any], send: Reply) -> Any:
        names = list(args.get("names") or ())
        self._check_names(names)  # as down/restart: a typo is an error, not an empty table
        return {"project": self.plan.name, "forwards": self.records(names)}

    async def op_wait(self, args: dict[str, Any], send: Reply) -> Any:
        """Answer once every forward is past starting (``listening``) or ready (``ready``)."""
        names = list(args.get("names") or ())
        records = functools.partial(self.records, names)
        return await wait_for_forwards(records, self.changes, self.closing, args)

    async def op_logs(self, args: dict[str, Any], send: Reply) -> Any:
        return await answer_logs(self.events, args, send, self.closing)

    async def op_down(self, args: dict[str, Any], send: Reply) -> Any:
        names = list(args.get("names") or ())
        self._check_names(names)
        if names:
            for name in names:
                await self.supervisor.stop_forward(name)
            return {"stopped": names, "exited": False}
        stopping = [forward.spec.name for forward in self.supervisor.forwards]
        self.supervisor.request_stop()
        await self.stopped.wait()
        return {"stopped": stopping, "exited": True}

    async def op_restart(self, args: dict[str, Any], send: Reply) -> Any:
        names = list(args.get("names") or ())
        self._check_names(names)
        restarted = await self.supervisor.restart(names or None)
        return {"restarted": restarted}

    def _switch_ports_env(self, path: Path | None) -> None:
        """A ports file named by the new ``up -d`` (flag or key) replaces the current one."""
        if path is None or (self.ports_env is not None and self.ports_env.path == path):
            return
        if self.ports_env is not None:
            self.ports_env.remove()
        self.ports_env = PortsEnvFile(path, self.plan.name)
        self.ports_env.seed(
            (status.name, item.remote, item.local)
            for status in self.supervisor.statuses
            for item in status.listening
        )

    async def op_reconcile(self, args: dict[str, Any], send: Reply) -> Any:
        """``up -d`` again: start added and changed forwards, stop removed ones."""
        launch = Launch.from_json(args["launch"])
        plan = launch.plan
        self._seed(launch)
        specs = dict(plan.forwards)
        if launch.selected:  # compose: `up -d a` leaves b alone
            current = self._specs()
            specs = {name: spec for name, spec in current.items() if name not in specs} | specs
        self._switch_ports_env(launch.ports_env or plan.ports_env)
        result = await self.supervisor.reconcile(specs)
        self.plan = plan
        self.order = list(plan.forwards) + [n for n in self.order if n not in plan.forwards]
        return asdict(result)


# -- the daemon process -------------------------------------------------------------------


_BOOT = (
    "import sys, json; d = json.loads(sys.stdin.readline()); sys.path[:0] = d['path']; "
    "from pfcompose.daemon.server import daemon_main; sys.exit(daemon_main(d['launch']))"
)


def daemon_main(launch_json: Mapping[str, Any]) -> int:
    """Entry of the daemon process (:data:`_BOOT` read the launch): report once on
    stdout, then run."""
    ready_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # nothing else may write to the pipe the parent reads
    os.close(devnull)

    reported = False

    def report(message: Mapping[str, Any]) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        with contextlib.suppress(OSError):
            ready_out.write(json.dumps(message) + "\n")
            ready_out.flush()
            ready_out.close()

    try:
        launch = Launch.from_json(launch_json)
        raise_open_file_limit()
        keep_freed_buffers()
        release_free_memory()
        return trio.run(_daemon, launch, report)
    except BaseException as exc:
        report({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        report({"ok": False, "error": "the daemon exited before it was ready"})


async def _daemon(launch: Launch, report: Any) -> int:
    plan = launch.plan
    paths = project_paths(plan.name)
    lock = DaemonLock(paths.lock)
    if not lock.try_acquire():
        report({"ok": False, "error": "already running", "running": True})
        return 0
    try:
        listener = await bind_socket(paths.socket)
        daemon = Daemon(launch, plan, paths, evaluate_in_subprocess)

        async def ready(message: Mapping[str, Any]) -> None:
            report(message)

        await daemon.run(listener, ready)
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            if not paths.socket.exists() or ipc.is_endpoint(paths.socket):
                paths.socket.unlink()
        lock.release()


# -- the parent's side ----------------------------------------------------------------------


async def spawn(
    launch: Launch, paths: ProjectPaths, *, timeout: float = READY_TIMEOUT
) -> dict[str, Any]:
    """Start the daemon and return its one ready line (``ok`` false: ``error`` says why).

    It runs lean, as ``up``'s foreground runtime does (:mod:`pfcompose.up.runtime`).
    """
    plan_name = launch.plan.name
    paths.stderr.parent.mkdir(parents=True, exist_ok=True)
    stderr_fd = os.open(paths.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC, 0o600)
    try:
        process = await trio.lowlevel.open_process(
            lean_argv(_BOOT, "pfcompose-daemon", plan_name),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_fd,
            **detach_options(),  # setsid; Windows: a detached process group
            close_fds=True,
        )
    except OSError as exc:  # the system would not start it: one line, not a traceback
        return {"ok": False, "error": f"could not start the daemon process: {exc}"}
    finally:
        os.close(stderr_fd)
    assert process.stdin is not None and process.stdout is not None
    try:
        async with process.stdin:
            hello = {"path": import_path(), "launch": launch.to_json()}
            await process.stdin.send_all(json.dumps(hello).encode() + b"\n")
        buffer = b""
        with trio.move_on_after(timeout) as scope:
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
        await process.stdout.aclose()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    if scope.cancelled_caught:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return {"ok": False, "error": f"the daemon did not report ready within {timeout:g}s"}
    line, _, _ = buffer.partition(b"\n")
    try:
        message: dict[str, Any] = json.loads(line)
    except ValueError:
        return {"ok": False, "error": f"the daemon failed to start{_stderr_tail(paths)}"}
    return message


def _stderr_tail(paths: ProjectPaths) -> str:
    try:
        lines = paths.stderr.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else ""
