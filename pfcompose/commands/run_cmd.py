"""``pfcompose run -- CMD``, ``port`` and ``wait``: forwards as one step of a script or CI job.

``run`` brings the forwards up in this process (or uses the project daemon's, when
``up -d`` already runs them), waits until each is ready — and healthy, where a
health check is declared — then runs CMD with the actual ports in its environment
(``PFCOMPOSE_<FORWARD>_<REMOTE>``, ``PFCOMPOSE_<FORWARD>_HOST``: the ports file's
names). CMD's exit status is ``run``'s; pfcompose's own failures have statuses of
their own (:mod:`pfcompose.exitcodes`). Its lines go to stderr, only failures and
reconnects unless ``--verbose``, so CMD's stdout stays clean for pipes.

``port`` and ``wait`` ask a running daemon, for scripts that ran ``up -d`` earlier.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from pfcompose.commands.common import plan_from_options, plan_options
from pfcompose.commands.lifecycle_cmd import _fail, _project_paths, complete_forward_names
from pfcompose.exitcodes import ExitCode
from pfcompose.platform.process import (
    RELAYED_SIGNALS,
    child_group_options,
    signal_group,
    terminal_foreground,
)

if TYPE_CHECKING:
    import trio

    from pfcompose.config import Plan
    from pfcompose.up.events import Event
    from pfcompose.up.supervisor import Supervisor

__all__ = ["port", "run", "wait"]

_USAGE = "pfcompose run [FORWARD]... [OPTIONS] -- CMD [ARG]..."


class _RunCommand(click.Command):
    """Everything after the first ``--`` is CMD, taken before click sees it (click
    drops ``--`` itself, so FORWARD names and CMD could not be told apart after)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            index = args.index("--")
            ctx.meta["pfcompose.run.command"] = args[index + 1 :]
            args = args[:index]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- CMD [ARG]..."]


# -- run ---------------------------------------------------------------------------------


@click.command("run", cls=_RunCommand)
@click.argument("names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names)
@plan_options
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the forwards to be ready/healthy.",
)
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
    "-v",
    "--verbose",
    is_flag=True,
    help="Print every event to stderr, not only failures and reconnects.",
)
@click.pass_context
def run(ctx: click.Context, /, names: Sequence[str], wait_timeout: float, kubeconfig: str | None,
        context: str | None, verbose: bool, **plan_kwargs: Any) -> None:  # fmt: skip
    """Run CMD with the forwards up: start them (or use the daemon's), wait, run, stop.

    CMD gets PFCOMPOSE_<FORWARD>_<REMOTE>=<local port> and PFCOMPOSE_<FORWARD>_HOST for
    every forward; pfcompose does not expand $VAR in CMD (use sh -c '... $PFCOMPOSE_DB_5432').

    Exit status: CMD's own (128+N if a signal N killed it); 2 configuration or usage
    error; 125 the forwards did not become ready (and healthy) within --wait-timeout;
    126 CMD cannot be executed; 127 CMD was not found; 130/143/129 interrupted before
    CMD started.
    """
    command = ctx.meta.get("pfcompose.run.command")
    if not command:
        click.echo(f"error: no command: {_USAGE}", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG)
    plan = plan_from_options(selected=names, **plan_kwargs)
    if not plan.forwards:
        click.echo("error: no active forwards (check --profile and the names given)", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG)
    reused = _daemon_forwards(plan)
    own = [spec for name, spec in plan.forwards.items() if name not in reused]
    materials: Any = ()
    if own:
        from dataclasses import replace

        from pfcompose.commands.common import evaluate_access

        subset = replace(plan, forwards={spec.name: spec for spec in own})
        materials = evaluate_access(subset, kubeconfig, context)
    runner = _Runner(plan, list(command), reused, wait_timeout, verbose)
    import trio

    code = trio.run(partial(runner.main, own, kubeconfig, context, materials))
    raise click.exceptions.Exit(int(code))


def _daemon_forwards(plan: Plan) -> dict[str, dict[str, Any]]:
    """The plan's forwards the project's daemon runs now (by name), as ``ps`` records."""
    import trio

    from pfcompose.daemon.control import ControlError, call, project_paths

    async def ask() -> Any:
        return await call(project_paths(plan.name), "ps")

    try:
        state = trio.run(ask)
    except ControlError:  # not running (or stopping): run them here
        return {}
    return {
        record["name"]: record
        for record in state["forwards"]
        if record["name"] in plan.forwards and record["state"] not in ("failed", "stopped")
    }


def _quiet(event: Event) -> bool:
    """What ``run`` prints without --verbose: failures, reconnects, unhealthy checks."""
    from pfcompose.up.events import Kind

    if event.is_error:
        return True
    if event.kind is Kind.STATE:
        return event.data.get("state") in ("reconnecting", "failed")
    return event.kind is Kind.HEALTH and event.data.get("health") == "unhealthy"


@dataclass
class _Runner:
    plan: Plan
    command: list[str]
    reused: dict[str, dict[str, Any]]
    wait_timeout: float
    verbose: bool
    _changed: Any = None
    _signals: list[int] = field(default_factory=list)

    def _sink(self, names: Sequence[str]) -> Any:
        import trio

        from pfcompose.up.ui import TerminalSink

        terminal = TerminalSink(names, out=sys.stderr, err=sys.stderr, quiet_connections=True)
        self._changed = trio.Event()

        def emit(event: Event) -> None:
            if self.verbose or _quiet(event):
                terminal(event)
            self._changed.set()
            self._changed = trio.Event()

        return emit

    async def main(self, own: list[Any], kubeconfig: str | None, context: str | None,
                   materials: Any) -> int:  # fmt: skip
        import trio

        from pfcompose.kube.cache import evaluate_in_thread
        from pfcompose.up.launch import Launch
        from pfcompose.up.runtime import forward_access
        from pfcompose.up.supervisor import Supervisor

        emit = self._sink(list(self.plan.forwards))
        launch = Launch(self.plan, kubeconfig=kubeconfig, context=context, materials=materials)
        loader = forward_access(launch, evaluate_in_thread)
        with trio.open_signal_receiver(*RELAYED_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                listening = trio.CancelScope()
                nursery.start_soon(self._collect_signals, signals, listening)
                supervisor: Supervisor | None = None
                if own:
                    supervisor = Supervisor(own, loader, emit=emit, grace=0.5)
                    await nursery.start(partial(supervisor.run, handle_signals=False))
                try:
                    code = await self._wait_then_run(supervisor)
                finally:
                    listening.cancel()
                    if supervisor is not None:
                        supervisor.request_stop()  # the forwards CMD used stop with it
        return code

    async def _collect_signals(self, signals: Any, scope: trio.CancelScope) -> None:
        with scope:
            async for signum in signals:
                self._signals.append(signum)
                self._wake()

    def _wake(self) -> None:
        import trio

        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    def _records(self, supervisor: Supervisor | None) -> list[dict[str, Any]]:
        from pfcompose.daemon.status import status_record

        if supervisor is None:
            return []
        specs = {f.spec.name: f.spec for f in supervisor.forwards}
        return [status_record(s, specs.get(s.name)) for s in supervisor.statuses]

    async def _wait_then_run(self, supervisor: Supervisor | None) -> int:
        import trio

        from pfcompose.daemon.status import gave_up, is_ready, not_ready_line

        deadline = time.monotonic() + self.wait_timeout
        records = self._records(supervisor)
        with trio.move_on_at(trio.current_time() + self.wait_timeout):
            while True:
                if self._signals:
                    return 128 + self._signals[0]
                records = self._records(supervisor)
                if all(is_ready(r) for r in records) or any(gave_up(r) for r in records):
                    break
                await self._wait_change()
        if self._signals:
            return 128 + self._signals[0]
        daemon_records = await self._wait_daemon(max(0.0, deadline - time.monotonic()))
        if daemon_records is None:
            return int(ExitCode.NOT_READY)
        not_ready = [r for r in [*records, *daemon_records] if not is_ready(r)]
        if not_ready:
            for record in not_ready:
                click.echo(f"error: {not_ready_line(record)}", err=True)
            return int(ExitCode.NOT_READY)
        if self._signals:  # interrupted while the daemon's forwards were awaited
            return 128 + self._signals[0]
        return await self._run_command(_environment([*records, *daemon_records]))

    async def _wait_daemon(self, timeout: float) -> list[dict[str, Any]] | None:
        """The reused forwards once the daemon says they are ready (or the time is up)."""
        if not self.reused:
            return []
        from pfcompose.daemon.control import ControlError, call, project_paths

        try:
            state = await call(project_paths(self.plan.name), "wait", until="ready",
                               names=list(self.reused), timeout=timeout)  # fmt: skip
        except ControlError as exc:
            click.echo(f"error: {exc}", err=True)
            return None
        records: list[dict[str, Any]] = state["forwards"]
        return records

    async def _run_command(self, env: dict[str, str]) -> int:
        import trio

        # A terminal's Ctrl-C reaches the whole foreground group by itself: there CMD
        # stays in ours (it may read the terminal) and gets signals straight from it;
        # otherwise CMD leads a group of its own and we pass signals to the group.
        own_group = not terminal_foreground()
        delivered = len(self._signals)  # any signal from here on goes to CMD
        try:
            process = await trio.lowlevel.open_process(
                self.command, env={**os.environ, **env}, **child_group_options(own_group),
            )  # fmt: skip
        except FileNotFoundError:
            click.echo(f"error: {self.command[0]}: command not found", err=True)
            return int(ExitCode.NOT_FOUND)
        except PermissionError:
            click.echo(f"error: {self.command[0]}: permission denied", err=True)
            return int(ExitCode.CANNOT_EXECUTE)
        except OSError as exc:
            click.echo(f"error: {self.command[0]}: {exc.strerror or exc}", err=True)
            return int(ExitCode.CANNOT_EXECUTE)
        async with trio.open_nursery() as nursery:

            async def relay() -> None:
                nonlocal delivered
                while True:
                    for signum in self._signals[delivered:]:
                        _deliver(process, signum, own_group)
                    delivered = len(self._signals)
                    await self._wait_change()

            nursery.start_soon(relay)
            for signum in self._signals[delivered:]:  # arrived during the spawn
                _deliver(process, signum, own_group)
            delivered = len(self._signals)
            code = await process.wait()
            nursery.cancel_scope.cancel()
        return 128 - code if code < 0 else code


def _deliver(process: trio.Process, signum: int, own_group: bool) -> None:
    try:
        if own_group:
            signal_group(process.pid, signum)
        elif signum != signal.SIGINT:  # the terminal already sent SIGINT to CMD itself
            process.send_signal(signum)
    except ProcessLookupError:
        pass


def _environment(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    from pfcompose.up.health import forward_environment

    env: dict[str, str] = {}
    for record in records:
        listening = [(i["address"], i["remote"], i["local"]) for i in record["listening"]]
        env.update(forward_environment(record["name"], listening))
    return env


# -- port ------------------------------------------------------------------------------


@click.command("port")
@click.argument("forward", shell_complete=complete_forward_names)
@click.argument("remote")
@plan_options
def port(forward: str, remote: str, **plan_kwargs: Any) -> None:
    """Print the local address of FORWARD's REMOTE port (127.0.0.1:54321), as
    `docker compose port` does, from the daemon or a foreground `up`; exit 1 if the
    project is not running or has no such mapping."""
    import trio

    from pfcompose.daemon.control import ControlError, call_running
    from pfcompose.daemon.status import join_host_port

    paths = _project_paths(plan_kwargs)

    async def ask() -> Any:
        return await call_running(paths, "ps", names=[forward])  # a foreground up too

    try:
        state = trio.run(ask)
    except ControlError as exc:
        _fail(str(exc))
    records = state["forwards"]
    entries = [item for r in records for item in r["listening"] if str(item["remote"]) == remote]
    if not entries:
        _fail(f"{forward} has no mapping for remote port {remote}")
    ipv4 = [item for item in entries if ":" not in item["address"]]
    chosen = (ipv4 or entries)[0]
    click.echo(join_host_port(chosen["address"], chosen["local"]))


# -- wait ------------------------------------------------------------------------------


@click.command("wait")
@click.argument("names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names)
@plan_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait.",
)
def wait(names: Sequence[str], timeout: float, **plan_kwargs: Any) -> None:
    """Wait until the running project's forwards (or the FORWARDs named) are ready, and
    healthy where they have a health check; exit 1 if not within --timeout (or one
    failed or is unhealthy), or if the project is not running."""
    import trio

    from pfcompose.daemon.control import ControlError, call_running
    from pfcompose.daemon.status import is_ready, not_ready_line

    paths = _project_paths(plan_kwargs)

    async def ask() -> Any:  # the daemon, or a foreground up
        return await call_running(paths, "wait", until="ready", names=list(names), timeout=timeout)

    try:
        state = trio.run(ask)
    except ControlError as exc:
        _fail(str(exc))
    failed = False
    for record in state["forwards"]:
        if is_ready(record):
            click.echo(f"{record['name']}: {record.get('health') or 'ready'}")
        else:
            failed = True
            click.echo(f"error: {not_ready_line(record)}", err=True)
    if failed or not state["satisfied"]:
        raise click.exceptions.Exit(ExitCode.FAILURE)
