"""The ``pfcompose`` command line: a click group whose commands live in ``pfcompose.commands``.

Each command module registers itself here, so adding a verb never touches another's file.
"""

from __future__ import annotations

import importlib

import click

from pfcompose import __version__
from pfcompose.exitcodes import ExitCode

# (module in pfcompose.commands, attribute) of every command, in help order.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("config_cmd", "config"),
    ("config_cmd", "schema"),
    ("sandbox_cmd", "sandbox"),
    ("up_cmd", "up"),
    ("check_cmd", "check"),
    ("lifecycle_cmd", "ps"),
    ("lifecycle_cmd", "logs"),
    ("lifecycle_cmd", "down"),
    ("lifecycle_cmd", "restart"),
    ("lifecycle_cmd", "ls"),
    ("top_cmd", "top"),
    ("run_cmd", "run"),
    ("run_cmd", "port"),
    ("run_cmd", "wait"),
)


class _Group(click.Group):
    """A group that imports each command's module only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for _, name in _COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        """Ctrl-C anywhere (loading a file, waiting for a daemon) is exit 130, one rule
        for every command, instead of click's ``Aborted!`` with status 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None

    @staticmethod
    def _load(name: str) -> click.Command | None:
        for module_name, attr in _COMMANDS:
            if attr != name:
                continue
            try:
                module = importlib.import_module(f"pfcompose.commands.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name == f"pfcompose.commands.{module_name}":
                    return None
                raise
            command = getattr(module, attr, None)
            return command if isinstance(command, click.Command) else None
        return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="pfcompose")
def main() -> None:
    """Compose for Kubernetes port-forwards.

    Declare every forward a project needs in forwards.yaml; `pfcompose up` runs them
    all in one process and keeps them alive through pod restarts.
    """


_process_entry = False


def entry() -> None:
    """The ``pfcompose`` console script and ``python -m pfcompose``.

    Only a process started this way may replace itself with ``up``'s lean runtime;
    ``main`` called from Python (click's test runner, an embedding program) never is.
    """
    global _process_entry
    _process_entry = True
    main(prog_name="pfcompose")


def process_entry() -> bool:
    return _process_entry
