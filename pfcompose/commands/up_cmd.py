"""``pfcompose up``: validate the file, then run every active forward until stopped."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import trio

from pfcompose.commands.common import plan_from_options, plan_options
from pfcompose.commands.lifecycle_cmd import (  # up -d, --wait, --ports-env, --log-file
    LifecycleOptions,
    complete_forward_names,
    foreground_sinks,
    lifecycle_options,
    run_detached,
)
from pfcompose.config import ForwardSpec, Plan
from pfcompose.events import Event, EventSink, Kind
from pfcompose.exitcodes import ExitCode
from pfcompose.forward import AccessLoader
from pfcompose.kube import ClusterAccess, load_access
from pfcompose.resources import raise_open_file_limit
from pfcompose.supervisor import Supervisor
from pfcompose.ui import JsonSink, TerminalSink

__all__ = ["up"]

SANDBOX_CONTEXT = "pfcompose-sandbox"


@click.command("up")
@click.argument("names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names)
@plan_options
@lifecycle_options
@click.option("--kubeconfig", default=None, metavar="PATH",
              help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", "context", default=None, metavar="NAME",
              help="Kubeconfig context; overrides defaults.context (a forward's own wins).")
@click.option("--sandbox", is_flag=True,
              help="Start the embedded sandbox cluster from the file and forward through it.")
@click.option("--quiet-connections", is_flag=True,
              help='Do not print a "Handling connection for" line per connection.')
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
def up(
    names: Sequence[str],
    kubeconfig: str | None,
    context: str | None,
    sandbox: bool,
    quiet_connections: bool,
    as_json: bool,
    **plan_kwargs: Any,
) -> None:
    """Start the forwards of the file (or only the FORWARDs named) and keep them alive.

    Exit status: 0 after a clean stop (Ctrl-C, SIGTERM), 1 when no forward could run,
    2 for configuration errors.
    """
    lifecycle = LifecycleOptions.pop(plan_kwargs)
    plan = plan_from_options(selected=names, **plan_kwargs)
    if not plan.forwards:
        click.echo("error: no active forwards (check --profile and the names given)", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG)
    emit: EventSink
    output_closed = OutputClosed()
    if as_json:
        emit = JsonSink(quiet_connections=quiet_connections, on_closed=output_closed)
    else:
        emit = TerminalSink(
            ["sandbox", *plan.forwards] if sandbox else plan.forwards,
            quiet_connections=quiet_connections,
            on_closed=output_closed,
        )
    # -- lifecycle (issue 6): -d/--wait go to the daemon; foreground adds ports file/log --
    if lifecycle.detached:
        run_detached(plan, lifecycle, names=names, plan_kwargs=plan_kwargs, kubeconfig=kubeconfig,
                     context=context, sandbox=sandbox, as_json=as_json)  # fmt: skip
    emit = foreground_sinks(plan, emit, lifecycle)
    # -- end lifecycle ------------------------------------------------------------------
    run = functools.partial(
        _run, plan, emit, kubeconfig=kubeconfig, context=context, output_closed=output_closed
    )
    raise_open_file_limit()
    try:
        code = trio.run(_run_sandboxed, plan, emit, run) if sandbox else trio.run(run, None)
    except BaseException as exc:
        if not _only_interrupts(exc):
            raise
        code = ExitCode.INTERRUPTED  # Ctrl-C after the signal handler was gone
    if output_closed.closed:
        code = ExitCode.FAILURE  # as click does for the other commands on EPIPE
    raise click.exceptions.Exit(int(code))


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


def _only_interrupts(exc: BaseException) -> bool:
    """A KeyboardInterrupt, bare or in trio's exception groups, and nothing else.

    The supervisor turns SIGINT into a graceful stop while it runs; a second Ctrl-C
    landing during the final teardown surfaces as KeyboardInterrupt instead.
    """
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(KeyboardInterrupt)
        return rest is None
    return isinstance(exc, KeyboardInterrupt)


def access_loader(kubeconfig: str | None, context: str | None) -> AccessLoader:
    """Kubeconfig and context for each forward: its own context, else ``--context``."""

    async def load(spec: ForwardSpec) -> ClusterAccess:
        chosen = spec.context if spec.context_is_own else (context or spec.context)
        return await load_access(kubeconfig, chosen)

    return load


async def _run(
    plan: Plan,
    emit: EventSink,
    override: AccessLoader | None,
    *,
    kubeconfig: str | None,
    context: str | None,
    output_closed: OutputClosed | None = None,
) -> ExitCode:
    loader = override or access_loader(kubeconfig, context)
    supervisor = Supervisor(plan.forwards.values(), loader, emit=emit)
    if output_closed is not None:
        output_closed.attach(supervisor.request_stop)
    return await supervisor.run()


async def _run_sandboxed(plan: Plan, emit: EventSink, run: Any) -> ExitCode:
    """Serve the file's targets from an in-process sandbox and forward through it."""
    from pfcompose.sandbox.server import run_sandbox
    from pfcompose.sandbox.state import state_from_plan

    state = state_from_plan(plan.forwards.values())
    async with run_sandbox(state) as sb:
        kubeconfig = str(Path(sb.kubeconfig_path))
        emit(Event("sandbox", Kind.STATE, f"API server at {sb.url} (kubeconfig {kubeconfig})",
                   data={"url": sb.url, "kubeconfig": kubeconfig}))

        async def load(spec: ForwardSpec) -> ClusterAccess:
            return await load_access(kubeconfig, SANDBOX_CONTEXT)

        code: ExitCode = await run(load)
        return code
