"""``pfcompose up``: validate the file, then run every active forward until stopped.

The command line validates and evaluates the kubeconfig here, then hands the plan
to :mod:`pfcompose.up.runtime` — by replacing this process with the lean runtime when
it was started as the ``pfcompose`` command, in-process otherwise (tests,
``--sandbox``, ``PFCOMPOSE_LEAN=0``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pfcompose import cli
from pfcompose.commands.common import evaluate_access, plan_from_options, plan_options
from pfcompose.commands.lifecycle_cmd import (  # up -d, --wait, --ports-env, --log-file
    LifecycleOptions,
    complete_forward_names,
    lifecycle_options,
    run_detached,
)
from pfcompose.exitcodes import ExitCode

if TYPE_CHECKING:
    from pfcompose.config.spec import ForwardSpec
    from pfcompose.up.launch import Launch
    from pfcompose.up.runtime import Main

__all__ = ["LEAN_VARIABLE", "up"]

SANDBOX_CONTEXT = "pfcompose-sandbox"

LEAN_VARIABLE = "PFCOMPOSE_LEAN"
"""Set to 0 to keep ``up`` in the command-line process instead of the lean runtime."""


@click.command("up")
@click.argument("names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names)
@plan_options
@lifecycle_options
@click.option(
    "--kubeconfig",
    default=None,
    metavar="PATH",
    help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
)
@click.option(
    "--context",
    "context",
    default=None,
    metavar="NAME",
    help="Kubeconfig context; overrides defaults.context (a forward's own wins).",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="Start the embedded sandbox cluster from the file and forward through it.",
)
@click.option(
    "--quiet-connections",
    is_flag=True,
    help='Do not print a "Handling connection for" line per connection.',
)
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.option(
    "--check",
    "check_first",
    is_flag=True,
    help="First check RBAC for every forward (as `pfcompose check`); exit 1 if any "
    "rule is missing.",
)
@click.option(
    "--metrics",
    "metrics",
    default=None,
    metavar="ADDR",
    help="Serve Prometheus metrics on ADDR (HOST:PORT, :PORT or PORT; loopback "
    "only, the file's metrics.listen may name another address).",
)
def up(
    names: Sequence[str],
    kubeconfig: str | None,
    context: str | None,
    sandbox: bool,
    quiet_connections: bool,
    as_json: bool,
    check_first: bool,
    metrics: str | None,
    **plan_kwargs: Any,
) -> None:
    """Start the forwards of the file (or only the FORWARDs named) and keep them alive.

    Exit status: 0 after a clean stop (Ctrl-C, SIGTERM), 1 when no forward could run,
    2 for configuration errors.
    """
    from pfcompose.up.launch import CAN_EXEC, Launch, exec_lean

    lifecycle = LifecycleOptions.pop(plan_kwargs)
    plan = plan_from_options(selected=names, **plan_kwargs)
    if not plan.forwards:
        click.echo("error: no active forwards (check --profile and the names given)", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG)
    if check_first and not sandbox:  # (the sandbox of --sandbox allows everything)
        from pfcompose.commands.check_cmd import run_check

        if run_check(plan, kubeconfig, context, as_json=as_json) is not ExitCode.OK:
            raise click.exceptions.Exit(ExitCode.FAILURE)
    if metrics is not None:
        plan = replace(plan, metrics=_metrics_option(metrics))
    # -- lifecycle (issue 6): -d/--wait go to the daemon; foreground adds ports file/log --
    if lifecycle.detached:
        run_detached(plan, lifecycle, names=names, plan_kwargs=plan_kwargs, kubeconfig=kubeconfig,
                     context=context, sandbox=sandbox, as_json=as_json)  # fmt: skip
    ports_env = lifecycle.ports_env or plan.ports_env
    launch = Launch(
        plan,
        kubeconfig=kubeconfig,
        context=context,
        as_json=as_json,
        quiet_connections=quiet_connections,
        ports_env=ports_env.resolve() if ports_env else None,
        log_file=lifecycle.log_file.resolve() if lifecycle.log_file else None,
    )
    # -- end lifecycle ------------------------------------------------------------------
    if sandbox:
        from pfcompose.up.runtime import run

        raise click.exceptions.Exit(run(launch, main=_sandboxed(launch), extra_names=["sandbox"]))
    launch = replace(launch, materials=evaluate_access(plan, kubeconfig, context))
    if CAN_EXEC and cli.process_entry() and os.environ.get(LEAN_VARIABLE, "1") != "0":
        exec_lean(launch)  # no return: this process becomes the runtime
    from pfcompose.up.runtime import run

    raise click.exceptions.Exit(run(launch))


def _metrics_option(text: str) -> str:
    """``--metrics``: checked as the file's key, and loopback only (exit 2 otherwise)."""
    from pfcompose.config.metricsconf import is_loopback_listen, parse_metrics_listen

    try:
        listen = parse_metrics_listen(text)
    except ValueError as exc:
        click.echo(f"error: --metrics: {exc}", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG) from None
    if not is_loopback_listen(listen):
        click.echo(f"error: --metrics: {listen} is not a loopback address; to expose metrics "
                   "to the network, set metrics.listen in the file", err=True)  # fmt: skip
        raise click.exceptions.Exit(ExitCode.CONFIG)
    return listen


def _sandboxed(launch: Launch) -> Main:
    """``--sandbox``: serve the file's targets from an in-process sandbox, forward through it."""
    from pfcompose.kube import ClusterAccess, load_access
    from pfcompose.sandbox.server import run_sandbox
    from pfcompose.sandbox.state import state_from_plan
    from pfcompose.up.events import Event, EventSink, Kind
    from pfcompose.up.runtime import OutputClosed, supervise

    plan = launch.plan

    async def main(emit: EventSink, output_closed: OutputClosed) -> ExitCode:
        state = state_from_plan(plan.forwards.values())
        async with run_sandbox(state) as sb:
            kubeconfig = str(Path(sb.kubeconfig_path))
            emit(Event("sandbox", Kind.STATE, f"API server at {sb.url} (kubeconfig {kubeconfig})",
                       data={"url": sb.url, "kubeconfig": kubeconfig}))  # fmt: skip

            async def load(spec: ForwardSpec) -> ClusterAccess:
                return await load_access(kubeconfig, SANDBOX_CONTEXT)

            return await supervise(plan, emit, load, output_closed)

    return main
