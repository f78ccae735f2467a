"""What ``up`` runs: the plan's plain data, and its JSON form for another process.

These dataclasses are all the forwarding runtime needs from the configuration.
They live apart from the pydantic models on purpose: the long-running process
(:mod:`pfcompose.up.runtime`, the ``up -d`` daemon) receives a validated plan as JSON
and rebuilds it here without importing pydantic, yaml or the loader (~14 MiB of
resident memory it would otherwise carry for its whole life).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pfcompose.config.addresses import ListenAddress
from pfcompose.config.healthspec import HealthSpec, health_from_json, health_to_json
from pfcompose.config.ports import PortMap
from pfcompose.config.problems import Problem
from pfcompose.config.target import PodTarget, SelectorTarget, Target, target_from_text

__all__ = [
    "ForwardSpec",
    "Plan",
    "ReconnectPolicy",
    "Transport",
    "plan_from_json",
    "plan_to_json",
    "spec_from_json",
    "spec_to_dict",
    "spec_to_json",
]

Transport = Literal["auto", "spdy", "spdy-over-websocket", "websocket"]


@dataclass(frozen=True)
class ReconnectPolicy:
    enabled: bool = True
    initial_backoff: float = 0.2  # seconds
    max_backoff: float = 10.0
    hold: float = 10.0


@dataclass(frozen=True)
class ForwardSpec:
    name: str
    to: Target  # PodTarget, ServiceTarget, WorkloadTarget or SelectorTarget (config/target.py)
    context: str | None  # None = kubeconfig current-context
    namespace: str | None  # None = the context's namespace, else "default"
    ports: tuple[PortMap, ...]
    addresses: tuple[str, ...]  # as written
    listen: tuple[ListenAddress, ...]  # client-go expansion, sorted, de-duplicated
    transport: Transport
    profiles: tuple[str, ...]
    reconnect: ReconnectPolicy
    keepalive: float  # seconds between SPDY pings
    quiet_connections: bool
    context_is_own: bool = False  # set in the forward itself: wins over --context
    health: HealthSpec | None = None  # healthcheck: (the forward's, else defaults')

    @property
    def target(self) -> str | None:
        """The target's text (``pod/x``, ``service/x``, ``deployment/x`` …); None for a selector."""
        return None if isinstance(self.to, SelectorTarget) else str(self.to)

    @property
    def selector(self) -> str | None:
        """The normalised selector (``app=api,tier in (edge,web)``); None for a target."""
        return self.to.selector if isinstance(self.to, SelectorTarget) else None

    @property
    def names_a_pod(self) -> bool:
        """``pod/NAME``: that one pod is waited for by name and must be Running."""
        return isinstance(self.to, PodTarget)


@dataclass(frozen=True)
class Plan:
    name: str
    project_directory: Path
    files: tuple[Path, ...]
    forwards: dict[str, ForwardSpec]  # active forwards only, in file order
    warnings: tuple[Problem, ...]
    ports_env: Path | None = None  # top-level ports_env:, resolved against project_directory
    metrics: str | None = None  # top-level metrics.listen (or up --metrics), "host:port"


# -- JSON ------------------------------------------------------------------------------


def spec_to_dict(spec: ForwardSpec) -> dict[str, Any]:
    """One forward in the documented JSON shape of ``pfcompose config --format json``."""
    return {
        "target": spec.target,
        "selector": spec.selector,
        "context": spec.context,
        "namespace": spec.namespace,
        "ports": [{"local": port.local, "remote": port.remote} for port in spec.ports],
        "addresses": list(spec.addresses),
        "listen": [dataclasses.asdict(entry) for entry in spec.listen],
        "transport": spec.transport,
        "profiles": list(spec.profiles),
        "reconnect": dataclasses.asdict(spec.reconnect),
        "keepalive": spec.keepalive,
        "quiet_connections": spec.quiet_connections,
        "healthcheck": health_to_json(spec.health),
    }


def spec_to_json(spec: ForwardSpec) -> dict[str, Any]:
    """The documented shape, plus what another process needs to run it."""
    return {"name": spec.name, **spec_to_dict(spec), "context_is_own": spec.context_is_own}


def spec_from_json(data: dict[str, Any]) -> ForwardSpec:
    """Inverse of :func:`spec_to_json` (trusted input: a plan this program validated)."""
    return ForwardSpec(
        name=data["name"],
        to=target_from_text(data["target"], data["selector"]),
        context=data["context"],
        namespace=data["namespace"],
        ports=tuple(PortMap(port["local"], port["remote"]) for port in data["ports"]),
        addresses=tuple(data["addresses"]),
        listen=tuple(ListenAddress(**entry) for entry in data["listen"]),
        transport=data["transport"],
        profiles=tuple(data["profiles"]),
        reconnect=ReconnectPolicy(**data["reconnect"]),
        keepalive=data["keepalive"],
        quiet_connections=data["quiet_connections"],
        context_is_own=data["context_is_own"],
        health=health_from_json(data.get("healthcheck")),
    )


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan without its warnings (they were printed where it was loaded)."""
    return {
        "name": plan.name,
        "project_directory": str(plan.project_directory),
        "files": [str(path) for path in plan.files],
        "forwards": [spec_to_json(spec) for spec in plan.forwards.values()],
        "ports_env": str(plan.ports_env) if plan.ports_env else None,
        "metrics": plan.metrics,
    }


def plan_from_json(data: dict[str, Any]) -> Plan:
    specs = [spec_from_json(item) for item in data["forwards"]]
    return Plan(
        name=data["name"],
        project_directory=Path(data["project_directory"]),
        files=tuple(Path(path) for path in data["files"]),
        forwards={spec.name: spec for spec in specs},
        warnings=(),
        ports_env=Path(data["ports_env"]) if data.get("ports_env") else None,
        metrics=data.get("metrics"),
    )
