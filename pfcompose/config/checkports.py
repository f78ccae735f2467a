"""``config --check-ports``: bind every listener ``up`` would bind, now, and let go.

Uses client-go's rules (docs/wire-protocol.md §11.1): a port fails when every ``all``-mode
listener failed or any ``any``-mode listener failed; local port 0 takes the port the
first successful listener got and reuses it on the other addresses. Failures are
worded as Go words them, so the line matches what ``kubectl port-forward`` prints.
"""

from __future__ import annotations

from pfcompose.config.listen import BoundPort, bind_port_sync
from pfcompose.config.plan import Plan
from pfcompose.config.problems import Problem, format_path

__all__ = ["check_ports"]


def check_ports(plan: Plan) -> list[Problem]:
    """One problem per port that ``up`` would fail to listen on; nothing stays bound."""
    problems: list[Problem] = []
    held: list[BoundPort] = []  # keep every port bound until all are tried, as up would
    try:
        for spec in plan.forwards.values():
            for index, port in enumerate(spec.ports):
                bound = bind_port_sync(spec.listen, port.local)
                held.append(bound)
                if bound.failed:
                    path = format_path(("forwards", spec.name, "ports", index))
                    problems.append(Problem(None, None, None, path, bound.failure_message()))
    finally:
        for bound in held:
            bound.close()
    return problems
