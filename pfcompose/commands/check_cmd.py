"""``pfcompose check``: may the kubeconfig's user run each forward? (SelfSubjectAccessReview)

One line per forward, as each answer comes: ``NAME: allowed`` or ``NAME: missing:
create pods/portforward in namespace shop`` (every missing rule, ``; ``-joined). What
is asked per transport and target: :mod:`pfcompose.kube.permissions`. ``up --check`` runs
the same before starting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from pfcompose.commands.common import plan_from_options, plan_options
from pfcompose.exitcodes import ExitCode

if TYPE_CHECKING:
    from pfcompose.config import Plan
    from pfcompose.kube.permissions import ForwardCheck

__all__ = ["check", "run_check"]


@click.command("check")
@click.argument("names", nargs=-1, metavar="[FORWARD]...")
@plan_options
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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per forward.")
def check(
    names: Sequence[str],
    kubeconfig: str | None,
    context: str | None,
    as_json: bool,
    **plan_kwargs: Any,
) -> None:
    """Ask the API server whether each forward is allowed (RBAC), without connecting.

    Exit status: 0 when every forward is allowed, 1 when a rule is missing or the
    server could not answer, 2 for configuration errors.
    """
    plan = plan_from_options(selected=names, **plan_kwargs)
    if not plan.forwards:
        click.echo("error: no active forwards (check --profile and the names given)", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG)
    raise click.exceptions.Exit(run_check(plan, kubeconfig, context, as_json=as_json))


def run_check(
    plan: Plan, kubeconfig: str | None, context: str | None, *, as_json: bool = False
) -> ExitCode:
    """Check every forward of ``plan``, printing one line each; OK only if all are allowed."""
    import trio

    width = max(len(name) for name in plan.forwards)

    def show(result: ForwardCheck) -> None:
        if as_json:
            click.echo(json.dumps(result.to_json(), separators=(",", ":")))
        else:
            click.echo(f"{result.name + ':':<{width + 1}} {result.line()}")

    results = trio.run(_check_all, plan, kubeconfig, context, show)
    return ExitCode.OK if all(r.ok for r in results) else ExitCode.FAILURE


async def _check_all(
    plan: Plan, kubeconfig: str | None, context: str | None, show: Any
) -> list[ForwardCheck]:
    from pfcompose.kube import KubeApiError, KubeClient, KubeConfigError, KubeConnectionError
    from pfcompose.kube.access import ClusterAccess, chosen_context
    from pfcompose.kube.kubeconfig import load_access
    from pfcompose.kube.permissions import ForwardCheck, check_forward, server_version

    accesses: dict[str | None, ClusterAccess | str] = {}
    versions: dict[str | None, tuple[int, int] | None] = {}
    results: list[ForwardCheck] = []
    for spec in plan.forwards.values():
        used = chosen_context(spec, context)
        if used not in accesses:
            try:
                accesses[used] = await load_access(kubeconfig, used)
            except KubeConfigError as exc:
                accesses[used] = str(exc)
        access = accesses[used]
        if isinstance(access, str):
            result = ForwardCheck(spec.name, spec.namespace or "", error=access)
        else:
            namespace = spec.namespace or access.namespace or "default"
            client = KubeClient(access)
            try:
                if used not in versions:
                    versions[used] = await server_version(client)
                result = await check_forward(client, spec, namespace, versions[used])
            except (KubeApiError, KubeConnectionError) as exc:
                text = " ".join(str(exc).split())
                result = ForwardCheck(
                    spec.name, namespace, error=f"cannot ask the API server: {text}"
                )
        results.append(result)
        show(result)
    return results
