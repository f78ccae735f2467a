"""``pfcompose top``: a live view of a running project (its daemon or a foreground ``up``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from pfcompose.commands.common import plan_options
from pfcompose.commands.lifecycle_cmd import _project_paths, complete_forward_names
from pfcompose.exitcodes import ExitCode

__all__ = ["top"]


@click.command("top")
@click.argument("names", nargs=-1, metavar="[FORWARD]...", shell_complete=complete_forward_names)
@plan_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Not a terminal: print each pushed snapshot as one JSON line.",
)
@click.option("-n", "--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Not a terminal: stop after N snapshots (one a second).")  # fmt: skip
def top(names: Sequence[str], as_json: bool, count: int | None, **plan_kwargs: Any) -> None:
    """Watch the project's forwards live: state, pod, connections, bytes/s, errors.

    On a terminal, a full-screen view refreshed up to 4 times a second from counters the
    supervisor pushes. Keys: q quit, ↑/↓ select, enter details (listen addresses,
    recent connections), r restart the selected forward (asks first). Otherwise one
    line per forward every second. Exit status: 0, or 1 when the project is not running.
    """
    import trio

    from pfcompose.commands.topview import run_tty
    from pfcompose.daemon.control import ControlError, NotRunning

    project = _project_paths(plan_kwargs).project
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not as_json and count is None
    if interactive and not _has_posix_terminal():
        # Windows consoles have no termios: the line view, said once rather than a traceback
        click.echo("top: no full-screen view on this platform (no termios); printing lines",
                   err=True)  # fmt: skip
        interactive = False
    try:
        if interactive:
            trio.run(run_tty, project, list(names))
        else:
            trio.run(_plain, project, list(names), as_json, count)
    except NotRunning as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(ExitCode.FAILURE) from None
    except ControlError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(ExitCode.FAILURE) from None
    except KeyboardInterrupt:
        return


async def _plain(project: str, names: list[str], as_json: bool, count: int | None) -> None:
    from pfcompose.commands.topview import run_plain

    await run_plain(project, names, sys.stdout, as_json=as_json, count=count)


def _has_posix_terminal() -> bool:
    """Whether keys can be read one by one (termios): every POSIX system, not Windows."""
    import importlib.util

    return importlib.util.find_spec("termios") is not None
