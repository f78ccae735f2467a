"""Options shared by every command that reads the configuration (``config``, ``up``).

``plan_options`` adds compose's flags; ``plan_from_options`` turns them into a Plan,
printing each warning and, on errors, every problem line before exiting with 2.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pfcompose.config import ConfigErrors, Plan, load_plan
from pfcompose.exitcodes import ExitCode

if TYPE_CHECKING:
    from pfcompose.kube.access import Materials

__all__ = ["evaluate_access", "plan_from_options", "plan_options"]


F = TypeVar("F", bound=Callable[..., Any])

_PATH = click.Path(path_type=Path)


def plan_options(command: F) -> F:
    """Add -f/--file, --project-directory, -p, --env-file, --profile and --debug."""
    options = [
        click.option(
            "-f", "--file", "files", multiple=True, type=_PATH, metavar="FILE",
            help="Configuration file; repeat to merge in order (default: discovered).",
        ),
        click.option(
            "--project-directory", type=_PATH, default=None, metavar="DIR",
            help="Project directory (default: the directory of the first file).",
        ),
        click.option(
            "-p", "--project-name", default=None, metavar="NAME",
            help="Project name when the file sets no name (default: the directory name).",
        ),
        click.option(
            "--env-file", "env_files", multiple=True, type=_PATH, metavar="FILE",
            help="Variables for interpolation (default: .env in the project directory).",
        ),
        click.option(
            "--profile", "profiles", multiple=True, metavar="PROFILE",
            help="Enable a profile; repeatable (also PFCOMPOSE_PROFILES=a,b).",
        ),
        click.option("--debug", is_flag=True, help="Show a traceback on internal errors."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def plan_from_options(
    *,
    files: Sequence[Path] = (),
    project_directory: Path | None = None,
    project_name: str | None = None,
    env_files: Sequence[Path] = (),
    profiles: Sequence[str] = (),
    debug: bool = False,
    selected: Sequence[str] = (),
) -> Plan:
    """Load the plan; print warnings; on ConfigErrors print every line and exit 2."""
    try:
        plan = load_plan(
            files,
            project_directory=project_directory,
            project_name=project_name,
            env_files=env_files,
            profiles=profiles,
            selected=selected,
        )
    except ConfigErrors as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        if debug:
            click.echo(traceback.format_exc().rstrip(), err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG) from None
    except Exception as exc:
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
        raise click.exceptions.Exit(ExitCode.FAILURE) from None
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    return plan


def evaluate_access(plan: Plan, kubeconfig: str | None, context: str | None) -> Materials:
    """Evaluate every kubeconfig context the plan uses, once, before anything starts.

    A context that cannot work (no kubeconfig, no such context, a malformed entry)
    is a configuration error, as in kubectl: one line, exit 2, nothing bound. A
    failure that may pass by itself (an exec plugin, an auth-provider) is left to
    the runtime, which reports it per forward and retries.
    """
    from pfcompose.kube.access import KubeConfigError, chosen_context
    from pfcompose.kube.kubeconfig import evaluate

    chosen = {name: chosen_context(spec, context) for name, spec in plan.forwards.items()}
    materials = []
    for used in dict.fromkeys(chosen.values()):
        try:
            materials.append((kubeconfig, used, evaluate(kubeconfig, used)))
        except KubeConfigError as exc:
            if exc.retryable:
                continue
            users = ", ".join(name for name, c in chosen.items() if c == used)
            click.echo(f"error: {users}: {exc}", err=True)
            raise click.exceptions.Exit(ExitCode.CONFIG) from None
    return tuple(materials)
