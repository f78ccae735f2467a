"""The resolved plan as ``config`` prints it: JSON for tools, YAML that loads again."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import yaml

from pfcompose.config.healthspec import HealthSpec
from pfcompose.config.plan import ForwardSpec, Plan, PortMap
from pfcompose.config.spec import spec_to_dict

__all__ = ["plan_to_json", "plan_to_yaml", "spec_to_dict"]


def plan_to_json(plan: Plan) -> str:
    document = {
        "name": plan.name,
        "forwards": {name: spec_to_dict(spec) for name, spec in plan.forwards.items()},
    }
    return json.dumps(document, indent=2) + "\n"


def _yaml_forward(spec: ForwardSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.target is not None:
        out["target"] = spec.target
    if spec.selector is not None:
        out["selector"] = spec.selector
    if spec.context is not None:
        out["context"] = spec.context
    if spec.namespace is not None:
        out["namespace"] = spec.namespace
    out["ports"] = [_short_port(port) for port in spec.ports]
    out["addresses"] = list(spec.addresses)
    out["transport"] = spec.transport
    if spec.profiles:
        out["profiles"] = list(spec.profiles)
    out["reconnect"] = dataclasses.asdict(spec.reconnect)
    out["keepalive"] = spec.keepalive
    out["quiet_connections"] = spec.quiet_connections
    if spec.health is not None:
        out["healthcheck"] = _yaml_health(spec.health)
    return out


def _yaml_health(health: HealthSpec) -> dict[str, Any]:
    """The check in the file's own keys (loading it again gives the same check)."""
    out: dict[str, Any] = {"type": health.kind}
    if health.port is not None:
        out["port"] = health.port
    if health.kind == "http":
        out["path"] = health.path
        out["expect"] = health.expect_text().split(",")
        if health.host is not None:
            out["host"] = health.host
        out["https"] = health.https
        out["insecure"] = health.insecure
    if health.kind == "exec":
        out["command"] = list(health.command)
    out.update(
        interval=health.interval,
        timeout=health.timeout,
        retries=health.retries,
        start_period=health.start_period,
    )
    return out


def _short_port(port: PortMap) -> str:
    if port.local == port.remote:
        return str(port.local)
    if port.local == 0:
        return f":{port.remote}"
    return f"{port.local}:{port.remote}"


def plan_to_yaml(plan: Plan) -> str:
    """A valid forwards file: loading it again yields the same forwards."""
    document = {
        "name": plan.name,
        "forwards": {name: _yaml_forward(spec) for name, spec in plan.forwards.items()},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
