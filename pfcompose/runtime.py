"""The long-running half of ``pfcompose up``: run a validated plan until stopped.

``up`` is two phases with very different needs. Loading and validating the file
takes click, pyyaml, pydantic and the kubernetes package; forwarding bytes for
hours takes trio and this package's wire code. So once the command line has a
valid plan and an evaluated kubeconfig, it *replaces itself* (``execve``, same
PID, same terminal, same signals) with a lean interpreter that imports only the
forwarding modules: ``python -S`` (no ``site`` hooks) given the parent's
``sys.path``, and the plan as JSON on an inherited memory file (``memfd``).
Re-evaluating credentials later (an exec plugin's token expired, a kubeconfig
changed) runs the kubernetes package in a short-lived helper process
(:func:`pfcompose.kube.cache.evaluate_in_subprocess`). Resident memory of a
running ``up`` drops from ~54 MiB to ~27 MiB (docs/performance.md).

:func:`run` is the same code path in-process (tests, ``--sandbox``, ``click``'s
test runner), so there is one implementation of the foreground runtime.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import trio

from pfcompose.config.spec import Plan, plan_from_json, plan_to_json
from pfcompose.eventlog import EventLogFile
from pfcompose.events import EventSink, fan_out
from pfcompose.exitcodes import ExitCode
from pfcompose.forward import AccessLoader
from pfcompose.kube.cache import (
    AccessCache,
    Evaluator,
    ForwardAccess,
    Materials,
    evaluate_in_subprocess,
    evaluate_in_thread,
    materials_from_json,
    materials_to_json,
)
from pfcompose.portsenv import PortsEnvFile
from pfcompose.resources import raise_open_file_limit, release_free_memory
from pfcompose.supervisor import Supervisor
from pfcompose.ui import JsonSink, TerminalSink

__all__ = [
    "OutputClosed",
    "UpLaunch",
    "exec_lean",
    "lean_argv",
    "main",
    "only_interrupts",
    "run",
    "supervise",
]


@dataclass(frozen=True)
class UpLaunch:
    """Everything the foreground runtime needs; JSON-able (credentials included: it only
    ever travels through a private file descriptor)."""

    plan: Plan
    kubeconfig: str | None = None
    context: str | None = None
    as_json: bool = False
    quiet_connections: bool = False
    ports_env: Path | None = None  # absolute; the flag's, else the file's ports_env
    log_file: Path | None = None  # absolute
    materials: Materials = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": plan_to_json(self.plan),
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "as_json": self.as_json,
            "quiet_connections": self.quiet_connections,
            "ports_env": str(self.ports_env) if self.ports_env else None,
            "log_file": str(self.log_file) if self.log_file else None,
            "materials": materials_to_json(self.materials),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpLaunch:
        return cls(
            plan=plan_from_json(data["plan"]),
            kubeconfig=data.get("kubeconfig"),
            context=data.get("context"),
            as_json=bool(data.get("as_json")),
            quiet_connections=bool(data.get("quiet_connections")),
            ports_env=Path(data["ports_env"]) if data.get("ports_env") else None,
            log_file=Path(data["log_file"]) if data.get("log_file") else None,
            materials=materials_from_json(data.get("materials", ())),
        )

    def access(self, evaluate: Evaluator) -> ForwardAccess:
        """The forwards' access loader, seeded with what the command line evaluated."""
        cache = AccessCache(evaluate)
        cache.seed(self.materials)
        return ForwardAccess(self.kubeconfig, self.context, cache)


class OutputClosed:
    """Stops the supervisor once stdout/stderr is closed (``pfcompose up | head -3``)."""

    def __init__(self) -> None:
        self.closed = False
        self._stop: Callable[[], None] | None = None

    def __call__(self) -> None:
        self.closed = True
        if self._stop is not None:
            self._stop()

    def attach(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        if self.closed:
            stop()


def only_interrupts(exc: BaseException) -> bool:
    """A KeyboardInterrupt, bare or in trio's exception groups, and nothing else.

    The supervisor turns SIGINT into a graceful stop while it runs; a second Ctrl-C
    landing during the final teardown surfaces as KeyboardInterrupt instead.
    """
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(KeyboardInterrupt)
        return rest is None
    return isinstance(exc, KeyboardInterrupt)


async def supervise(
    plan: Plan, emit: EventSink, loader: AccessLoader, output_closed: OutputClosed
) -> ExitCode:
    supervisor = Supervisor(plan.forwards.values(), loader, emit=emit)
    output_closed.attach(supervisor.request_stop)
    return await supervisor.run()


Main = Callable[[EventSink, OutputClosed], Any]
"""An async function run under ``trio.run``; returns the ExitCode."""


def run(
    launch: UpLaunch,
    *,
    evaluate: Evaluator = evaluate_in_thread,
    main: Main | None = None,
    extra_names: Sequence[str] = (),
) -> int:
    """Run the plan in this process until stopped; the exit status.

    ``main`` replaces the default supervision (``--sandbox`` wraps it in a sandbox);
    ``extra_names`` are more event sources to align in the terminal's name column.
    """
    output_closed = OutputClosed()
    emit: EventSink
    if launch.as_json:
        emit = JsonSink(quiet_connections=launch.quiet_connections, on_closed=output_closed)
    else:
        emit = TerminalSink(
            [*extra_names, *launch.plan.forwards],
            quiet_connections=launch.quiet_connections,
            on_closed=output_closed,
        )
    closers: list[Callable[[], None]] = []
    sinks: list[EventSink] = [emit]
    if launch.ports_env is not None:
        ports = PortsEnvFile(launch.ports_env, launch.plan.name)
        sinks.append(ports)
        closers.append(ports.remove)
    if launch.log_file is not None:
        log = EventLogFile(launch.log_file)
        sinks.append(lambda event: log.write(event.to_json()))
        closers.append(log.close)
    emit = fan_out(*sinks) if len(sinks) > 1 else emit
    if main is None:
        loader = launch.access(evaluate)

        async def default_main(emit: EventSink, output_closed: OutputClosed) -> ExitCode:
            return await supervise(launch.plan, emit, loader, output_closed)

        main = default_main
    raise_open_file_limit()
    try:
        code = int(trio.run(main, emit, output_closed))
    except BaseException as exc:
        if not only_interrupts(exc):
            raise
        code = ExitCode.INTERRUPTED  # Ctrl-C after the signal handler was gone
    finally:
        for close in closers:
            close()
    if output_closed.closed:
        code = ExitCode.FAILURE  # as click does for the other commands on EPIPE
    return code


# -- the lean process ----------------------------------------------------------------------

_BOOT = (
    "import sys, os, json; f = os.fdopen(int(sys.argv[1]), 'rb'); d = json.load(f); "
    "f.close(); sys.path[:0] = d.pop('path'); "
    "from pfcompose.runtime import main; box = [d]; del d; sys.exit(main(box.pop()))"
)


def lean_argv(boot: str, *args: str) -> list[str]:
    """``python -S -c BOOT ARGS…``: no ``site`` (its .pth hooks cost ~4 MiB resident);
    ``BOOT`` puts the parent's ``sys.path`` back before importing anything of ours."""
    return [sys.executable, "-S", "-c", boot, *args]


def import_path() -> list[str]:
    """This process's import path, with this package's root first (an editable
    install is found through a ``site`` hook the lean process does not run)."""
    root = str(Path(__file__).resolve().parent.parent)
    return [root, *(entry for entry in sys.path if entry != root)]


def exec_lean(launch: UpLaunch) -> NoReturn:
    """Replace this process with the lean runtime running ``launch``."""
    data = launch.to_json()
    data["path"] = import_path()
    fd = _private_file()
    with os.fdopen(os.dup(fd), "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, lean_argv(_BOOT, str(fd), *sys.argv))


def _private_file() -> int:
    """A file only this process can reach, for the plan and its credentials: memory
    (``memfd_create``) where there is one, else a 0600 temp file unlinked at once."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("pfcompose-up")
    fd, name = tempfile.mkstemp(prefix="pfcompose-up-")
    os.unlink(name)
    return fd


def main(data: dict[str, Any]) -> int:
    """Entry of the lean process (see :data:`_BOOT`)."""
    launch = UpLaunch.from_json(data)
    del data
    release_free_memory()
    return run(launch, evaluate=evaluate_in_subprocess)
