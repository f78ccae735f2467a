"""``ps``, ``logs``, ``down``, ``restart``, ``ls`` and ``up -d``: talking to a project's daemon.

Every command finds its project the way compose does (``-p``, else the file's
``name:``, else the directory) and then asks that project's daemon over the control
socket; nothing here guesses from ports or process lists. Heavy imports stay inside
the functions so completion and ``--help`` stay fast.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pfcompose.commands.common import plan_from_options, plan_options
from pfcompose.exitcodes import ExitCode

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from pfcompose.config import Plan
    from pfcompose.daemon.control import ControlClient, ProjectPaths

__all__ = [
    "LifecycleOptions",
    "complete_forward_names",
    "down",
    "lifecycle_options",
    "logs",
    "ls",
    "ps",
    "restart",
    "run_detached",
    "up_detached",
]

_PATH = click.Path(path_type=Path)


# -- completion ------------------------------------------------------------------------


def complete_forward_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Forward names of the file the command line points at (any problem: none)."""
    from click.shell_completion import CompletionItem

    from pfcompose.config import load_plan

    params = ctx.params
    try:
        plan = load_plan(
            params.get("files") or (),
            project_directory=params.get("project_directory"),
            project_name=params.get("project_name"),
            env_files=params.get("env_files") or (),
            profiles=params.get("profiles") or (),
        )
    except Exception:
        return []
    already = set(params.get("names") or ())
    return [
        CompletionItem(name, help=spec.target or spec.selector or "")
        for name, spec in plan.forwards.items()
        if name.startswith(incomplete) and name not in already
    ]


# -- finding the project -------------------------------------------------------------------


def _project_paths(plan_kwargs: dict[str, Any]) -> ProjectPaths:
    """``-p NAME`` alone names the project; otherwise the file (as ``up`` reads it) does."""
    from pfcompose.config.discovery import normalize_project_name
    from pfcompose.daemon.control import ControlError, project_paths

    name = plan_kwargs.get("project_name")
    try:
        if name and not plan_kwargs.get("files"):
            return project_paths(normalize_project_name(name))
        return project_paths(plan_from_options(**plan_kwargs).name)
    except ControlError as exc:
        _fail(str(exc))


def _fail(message: str, code: ExitCode = ExitCode.FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _run_async(fn: Callable[..., Any], *args: Any) -> Any:
    """trio.run with the channel's one-line errors (but NotRunning) turned into exit 1."""
    import trio

    from pfcompose.daemon.control import ControlError, NotRunning

    try:
        return trio.run(fn, *args)
    except NotRunning:
        raise  # each command says what "not running" means for it
    except ControlError as exc:
        _fail(str(exc))


def _format_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table: a rich table on a terminal, aligned columns otherwise; json: an array.",
    )(command)


_names_argument = click.argument(
    "names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names
)


# -- ps ------------------------------------------------------------------------------------


@click.command("ps")
@_names_argument
@plan_options
@_format_option
def ps(names: Sequence[str], fmt: str, **plan_kwargs: Any) -> None:
    """Show each forward: pod, ports, state, transport, connections, bytes, errors.

    The state is what the supervisor measured (a session answering pings is
    "ready"), not a probe of the local port.
    """
    from pfcompose.daemon.control import NotRunning, call_running
    from pfcompose.daemon.status import render

    paths = _project_paths(plan_kwargs)

    async def query() -> Any:
        return await call_running(paths, "ps", names=list(names))  # a foreground up too

    try:
        result = _run_async(query)
    except NotRunning as exc:
        if fmt == "json":
            click.echo("[]")
        click.echo(str(exc), err=True)
        return
    render(result["forwards"], fmt, sys.stdout)


# -- logs ----------------------------------------------------------------------------------


def parse_since(text: str, now: float | None = None) -> float:
    """``10m``, ``1h30m``, ``90`` (seconds ago) or an ISO 8601 time → a UNIX time."""
    from pfcompose.config.model import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except Exception:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use a duration such as 10m or 1h30m, or a time such as 2024-05-01T12:00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


class _LogPrinter:
    """Compose-style ``name | text`` lines, everything on stdout (as ``compose logs``)."""

    def __init__(
        self, names: Sequence[str], timestamps: bool, colour: bool | None, ends: bool = False
    ) -> None:
        from pfcompose.up.ui import TerminalSink

        self._sink = TerminalSink(
            names, out=sys.stdout, err=sys.stdout, colour=colour, connection_ends=ends
        )
        self._timestamps = timestamps

    def __call__(self, record: dict[str, Any]) -> None:
        import dataclasses

        from pfcompose.daemon.eventlog import event_from_json

        event = event_from_json(record)
        if self._timestamps:
            stamp = datetime.datetime.fromtimestamp(event.time).astimezone()
            text = f"{stamp.isoformat(timespec='milliseconds')} {event.message}"
            event = dataclasses.replace(event, message=text)
        self._sink(event)


@click.command("logs")
@_names_argument
@plan_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option(
    "--since",
    default=None,
    metavar="DURATION",
    help="Only events newer than this: 10m, 1h30m, or a time (2024-05-01T12:00).",
)
@click.option(
    "-n",
    "--tail",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Only the last N events (before following).",
)
@click.option("-t", "--timestamps", is_flag=True, help="Show the time of each event.")
@click.option("--no-color", is_flag=True, help="No colours, even on a terminal.")
@click.option(
    "--connections",
    is_flag=True,
    help="Only each connection's end: peer, duration, bytes each way, how it ended.",
)
@click.option(
    "--log-file",
    type=_PATH,
    default=None,
    metavar="PATH",
    help="Event log to read when the daemon is not running (default: the project's).",
)
def logs(names: Sequence[str], follow: bool, since: str | None, tail: int | None,
         timestamps: bool, no_color: bool, connections: bool, log_file: Path | None,
         **plan_kwargs: Any) -> None:  # fmt: skip
    """Print the forwards' events and connection lines, prefixed by forward name.

    From the running project's memory (its daemon, or a foreground `up`); when none
    runs, from the daemon's event log file (JSON lines, rotated by size), so the
    history of a stopped project is still there.
    """
    from pfcompose.daemon.control import NotRunning, connect_running
    from pfcompose.daemon.eventlog import matches, read_log_file

    paths = _project_paths(plan_kwargs)
    since_time = parse_since(since) if since else None
    colour = False if no_color else None
    kinds = ["connection_closed"] if connections else []

    async def stream() -> None:
        conn = await connect_running(paths)
        try:
            state = await conn.call("ps")
            known = [r["name"] for r in state["forwards"]]
            printer = _LogPrinter(known or names, timestamps, colour, connections)
            answers = await conn.request(
                "logs",
                names=list(names),
                since=since_time,
                follow=follow,
                tail=tail,
                **({"kinds": kinds} if kinds else {}),
            )
            async for message in answers:
                if "event" in message:
                    printer(message["event"])
        finally:
            await conn.aclose()

    try:
        _run_async(stream)
        return
    except NotRunning as exc:
        not_running = str(exc)
    except KeyboardInterrupt:
        return
    path = log_file or paths.log
    records = [r for r in read_log_file(path) if matches(r, since_time, names)
               and (not kinds or r.get("kind") in kinds)]  # fmt: skip
    if tail is not None:
        records = records[len(records) - tail :] if tail else []
    if not records and not path.exists():
        click.echo(f"{not_running} (and it has no event log at {path})", err=True)
        return
    printer = _LogPrinter(sorted({r.get("forward", "") for r in records} - {""}), timestamps,
                          colour, connections)  # fmt: skip
    for record in records:
        printer(record)
    if follow:
        click.echo(f"{not_running}; nothing to follow", err=True)


# compose's `logs -f` is --follow; the file is --file here (`-f` stays -f everywhere else).
for _param in logs.params:
    if _param.name == "files":
        _param.opts = [opt for opt in _param.opts if opt != "-f"]


# -- down / restart --------------------------------------------------------------------------


@click.command("down")
@_names_argument
@plan_options
def down(names: Sequence[str], **plan_kwargs: Any) -> None:
    """Stop the project's forwards gracefully (only the FORWARDs named, if any).

    Listeners close, open connections get up to 2 s to finish, sessions close; with
    no FORWARD the daemon exits, or a foreground `up` exits 0 as after Ctrl-C.
    Nothing running is not an error.
    """
    from pfcompose.daemon.control import NotRunning, call_running

    paths = _project_paths(plan_kwargs)

    async def stop() -> Any:
        return await call_running(paths, "down", names=list(names))  # a foreground up too

    try:
        result = _run_async(stop)
    except NotRunning:
        click.echo(f"Nothing to stop: project {paths.project} is not running.", err=True)
        return
    for name in result["stopped"]:
        click.echo(f"{name}: stopped")
    if result["exited"]:
        click.echo(f"project {paths.project}: down")


@click.command("restart")
@_names_argument
@plan_options
def restart(names: Sequence[str], **plan_kwargs: Any) -> None:
    """Restart forwards (all, or the FORWARDs named) with the configuration they run.

    To apply changes made to the file, run `pfcompose up -d` again instead.
    """
    from pfcompose.daemon.control import NotRunning, connect_running

    paths = _project_paths(plan_kwargs)

    async def run() -> Any:
        conn = await connect_running(paths)  # the daemon, or a foreground up
        try:
            result = await conn.call("restart", names=list(names))
            await conn.call("wait", until="listening", names=result["restarted"], timeout=60)
            return result
        finally:
            await conn.aclose()

    try:
        result = _run_async(run)
    except NotRunning as exc:
        _fail(str(exc))
    for name in result["restarted"]:
        click.echo(f"{name}: restarted")


# -- ls ------------------------------------------------------------------------------------


@click.command("ls")
@_format_option
@click.option("-q", "--quiet", is_flag=True, help="Only the project names.")
def ls(fmt: str, quiet: bool) -> None:
    """List the running projects: name, forward count, daemon pid and files."""
    from pfcompose.daemon.control import ControlError, call, list_projects

    async def gather() -> list[dict[str, Any]]:
        found = []
        for paths in list_projects():
            try:
                with_timeout = await _with_timeout(call(paths, "info"), 5.0)
            except ControlError:
                continue  # stale (now cleaned up) or stopping
            if with_timeout is not None:
                found.append(with_timeout)
        return found

    projects = _run_async(gather)
    if quiet:
        for info in projects:
            click.echo(info["project"])
        return
    if fmt == "json":
        import json

        click.echo(json.dumps(projects, indent=2))
        return
    rows = [["NAME", "STATUS", "PID", "CONFIG FILES"]]
    rows += [
        [p["project"], f"running({p['forwards']})", str(p["pid"]), ",".join(p["files"])]
        for p in projects
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())


async def _with_timeout(awaitable: Any, seconds: float) -> Any:
    import trio

    with trio.move_on_after(seconds):
        return await awaitable
    return None


# -- up -d ---------------------------------------------------------------------------------------


def lifecycle_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``up``'s options of this module; their values reach ``up`` in ``**kwargs``."""
    options = [
        click.option("-d", "--detach", "lc_detach", is_flag=True,
                     help="Run in a background daemon; return once every forward listens."),
        click.option("--wait", "lc_wait", is_flag=True,
                     help="With -d (implied): return when every forward is ready; exit 1 "
                          "if one is not within --wait-timeout."),
        click.option("--wait-timeout", "lc_wait_timeout", type=click.FloatRange(min=0),
                     default=60.0, show_default=True, metavar="SECONDS",
                     help="How long --wait waits."),
        click.option("--ports-env", "lc_ports_env", type=_PATH, default=None, metavar="FILE",
                     help="Keep a dotenv file of the actual local ports "
                          "(PFCOMPOSE_<FORWARD>_<REMOTE>=<port>); also the ports_env key."),
        click.option("--log-file", "lc_log_file", type=_PATH, default=None, metavar="PATH",
                     help="Append events as JSON lines here, rotated at 10 MiB "
                          "(-d default: in the runtime directory)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class LifecycleOptions:
    detach: bool
    wait: bool
    wait_timeout: float
    ports_env: Path | None
    log_file: Path | None

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> LifecycleOptions:
        """Take this module's options out of ``up``'s kwargs (the rest are plan options)."""
        return cls(
            detach=bool(kwargs.pop("lc_detach", False)),
            wait=bool(kwargs.pop("lc_wait", False)),
            wait_timeout=float(kwargs.pop("lc_wait_timeout", 60.0)),
            ports_env=kwargs.pop("lc_ports_env", None),
            log_file=kwargs.pop("lc_log_file", None),
        )

    @property
    def detached(self) -> bool:
        return self.detach or self.wait


def run_detached(
    plan: Plan,
    options: LifecycleOptions,
    *,
    names: Sequence[str],
    plan_kwargs: dict[str, Any],
    kubeconfig: str | None,
    context: str | None,
    sandbox: bool,
    as_json: bool,
) -> NoReturn:
    """``up -d`` / ``up --wait``: exits with up_detached's status."""
    if sandbox:
        _fail(
            "--sandbox runs in the foreground only; for -d run `pfcompose sandbox --from FILE "
            "--kubeconfig-out PATH` and pass --kubeconfig PATH",
            ExitCode.CONFIG,
        )
    code = up_detached(
        plan,
        names=names,
        kubeconfig=kubeconfig,
        context=context,
        wait=options.wait,
        wait_timeout=options.wait_timeout,
        ports_env=options.ports_env,
        log_file=options.log_file,
        as_json=as_json,
    )
    raise click.exceptions.Exit(int(code))


def up_detached(
    plan: Plan,
    *,
    names: Sequence[str],
    kubeconfig: str | None,
    context: str | None,
    wait: bool,
    wait_timeout: float,
    ports_env: Path | None,
    log_file: Path | None,
    as_json: bool,
) -> ExitCode:
    """Start the project's daemon, or reconcile the running one; print the table."""
    from pfcompose.commands.common import evaluate_access
    from pfcompose.daemon.control import ControlError, NotRunning, connect, project_paths
    from pfcompose.daemon.server import spawn
    from pfcompose.daemon.status import render
    from pfcompose.up.launch import Launch

    kubeconfig = str(Path(kubeconfig).resolve()) if kubeconfig else None
    paths = project_paths(plan.name)
    launch = Launch(
        plan=plan,
        selected=tuple(names),
        kubeconfig=kubeconfig,
        context=context,
        ports_env=ports_env.resolve() if ports_env else None,
        log_file=log_file.resolve() if log_file else None,
        materials=evaluate_access(plan, kubeconfig, context),
    )

    async def start() -> tuple[dict[str, Any], dict[str, Any] | None]:
        conn: ControlClient | None = None
        spawned = False
        for _ in range(2):  # a second `up -d` racing us may win the start: then reconcile
            try:
                conn = await connect(paths)
                break
            except NotRunning:
                started = await spawn(launch, paths)
                if started.get("ok"):
                    conn, spawned = await connect(paths), True
                    break
                if not started.get("running"):
                    error = started.get("error") or "the daemon failed to start"
                    raise ControlError(error) from None
        if conn is None:
            raise ControlError(f"could not start or reach the {plan.name} daemon")
        try:
            changes = None
            if not spawned:
                changes = await conn.call("reconcile", launch=launch.to_json())
            until = "ready" if wait else "listening"
            timeout = wait_timeout if wait else 60.0
            state = await conn.call("wait", until=until, timeout=timeout)
            records = state["forwards"]
            if spawned and records and all(r["state"] == "failed" for r in records):
                await conn.call("down")  # nothing could listen: leave no idle daemon behind
            return state, changes
        finally:
            await conn.aclose()

    try:
        state, changes = _run_async(start)
    except ControlError as exc:
        _fail(str(exc))
    if changes is not None:
        for verb, key in (("started", "added"), ("recreated", "changed"), ("stopped", "removed")):
            for name in changes[key]:
                click.echo(f"{name}: {verb}", err=True)
    records = state["forwards"]
    render(records, "json" if as_json else "table", sys.stdout)
    if wait and not state["satisfied"]:
        from pfcompose.daemon.status import is_ready, not_ready_line

        for record in records:
            if record["state"] == "ready" and not is_ready(record):  # a health check said no
                click.echo(f"error: {not_ready_line(record)}", err=True)
            elif record["state"] != "ready":
                reason = record["status"]
                if record["last_error"] and record["state"] != "failed":
                    reason += f" (last error: {record['last_error']})"
                click.echo(f"error: {record['name']} is not ready: {reason}", err=True)
        return ExitCode.FAILURE
    if changes is None and records and all(r["state"] == "failed" for r in records):
        click.echo("error: no forward could start; the daemon has been stopped", err=True)
        return ExitCode.FAILURE
    return ExitCode.OK
