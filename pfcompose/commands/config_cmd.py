"""``pfcompose config`` (print or check the resolved configuration) and ``pfcompose schema``."""

from __future__ import annotations

import json
from typing import Any

import click

from pfcompose.commands.common import plan_from_options, plan_options
from pfcompose.config.checkports import check_ports as run_port_check
from pfcompose.config.model import json_schema
from pfcompose.config.render import plan_to_json, plan_to_yaml
from pfcompose.exitcodes import ExitCode

__all__ = ["config", "schema", "schema_text"]


@click.command("config")
@click.argument("forwards", nargs=-1, metavar="[FORWARD]...")
@plan_options
@click.option(
    "--format", "output_format", type=click.Choice(["yaml", "json"]), default="yaml",
    show_default=True, help="Output format.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Only validate; print nothing on success.")
@click.option("--services", is_flag=True, help="List the names of the active forwards.")
@click.option(
    "--check-ports", is_flag=True,
    help="Also bind every listen address and local port now; exit 1 if one would fail.",
)  # fmt: skip
def config(
    forwards: tuple[str, ...],
    output_format: str,
    quiet: bool,
    services: bool,
    check_ports: bool,
    **options: Any,
) -> None:
    """Validate and print the fully resolved configuration.

    Files are merged, variables interpolated, defaults applied; only active forwards
    (profiles, or the FORWARDs named) are shown. Problems are printed one per line
    as FILE:LINE:COL: path: message, and the exit status is 2.
    """
    plan = plan_from_options(selected=forwards, **options)
    if not quiet:
        if services:
            for name in plan.forwards:
                click.echo(name)
        elif output_format == "json":
            click.echo(plan_to_json(plan), nl=False)
        else:
            click.echo(plan_to_yaml(plan), nl=False)
    if check_ports:
        failures = run_port_check(plan)
        for failure in failures:
            click.echo(str(failure), err=True)
        if failures:
            raise click.exceptions.Exit(ExitCode.FAILURE)


def schema_text() -> str:
    """The JSON Schema exactly as committed in ``forwards.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of the configuration file (for editors and CI)."""
    click.echo(schema_text(), nl=False)
