"""The long-running half of ``pfcompose up``: run a validated plan until stopped.

This is what the lean process (:mod:`pfcompose.up.launch`) runs, and also what runs
in-process (tests, ``--sandbox``, ``PFCOMPOSE_LEAN=0``), so there is one
implementation of the foreground runtime. It imports trio, h11, wsproto and the
forwarding modules, never click, pydantic, yaml or the kubernetes package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio

from pfcompose.config.spec import Plan
from pfcompose.daemon.eventlog import EventLogFile
from pfcompose.exitcodes import ExitCode
from pfcompose.kube.cache import (
    AccessCache,
    Evaluator,
    ForwardAccess,
    evaluate_in_subprocess,
    evaluate_in_thread,
)
from pfcompose.up.events import EventSink, fan_out
from pfcompose.up.forward import AccessLoader
from pfcompose.up.launch import Launch
from pfcompose.up.portsenv import PortsEnvFile
from pfcompose.up.resources import keep_freed_buffers, raise_open_file_limit, release_free_memory
from pfcompose.up.supervisor import Supervisor
from pfcompose.up.ui import JsonSink, TerminalSink

__all__ = [
    "Main",
    "OutputClosed",
    "forward_access",
    "main",
    "only_interrupts",
    "run",
    "supervise",
]


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
    # metrics, and the channel that top, wait, logs and down use
    from pfcompose.up.observe import Watch, observing

    watch = Watch()
    supervisor = Supervisor(plan.forwards.values(), loader, emit=fan_out(emit, watch))
    output_closed.attach(supervisor.request_stop)
    async with observing(plan, supervisor, emit, watch):
        if isinstance(loader, ForwardAccess):
            async with loader.cache.renewing_in_background():
                return await supervisor.run()
        return await supervisor.run()


Main = Callable[[EventSink, OutputClosed], Any]
"""An async function run under ``trio.run``; returns the ExitCode."""


def run(
    launch: Launch,
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
        loader = forward_access(launch, evaluate)

        async def default_main(emit: EventSink, output_closed: OutputClosed) -> ExitCode:
            return await supervise(launch.plan, emit, loader, output_closed)

        main = default_main
    raise_open_file_limit()
    keep_freed_buffers()
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


def forward_access(launch: Launch, evaluate: Evaluator) -> ForwardAccess:
    """The forwards' access loader, seeded with what the command line evaluated."""
    cache = AccessCache(evaluate)
    cache.seed(launch.materials)
    return ForwardAccess(launch.kubeconfig, launch.context, cache)


def main(data: dict[str, Any]) -> int:
    """Entry of the lean process (see :data:`pfcompose.up.launch._BOOT`)."""
    launch = Launch.from_json(data)
    del data
    release_free_memory()
    return run(launch, evaluate=evaluate_in_subprocess)
