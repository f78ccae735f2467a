"""The plan crosses a process boundary (``up``'s lean runtime, the ``up -d`` daemon) as
JSON: what arrives must be exactly what was validated."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from pfcompose.config import load_plan
from pfcompose.config.spec import plan_from_json, plan_to_json

ROOT = Path(__file__).resolve().parents[2]


def test_every_forward_of_the_example_survives_the_round_trip() -> None:
    plan = load_plan([ROOT / "forwards.example.yaml"])
    assert plan.forwards
    again = plan_from_json(json.loads(json.dumps(plan_to_json(plan))))
    assert again == dataclasses.replace(plan, warnings=())


def test_named_ports_wildcards_and_policies_survive(tmp_path: Path) -> None:
    (tmp_path / "forwards.yaml").write_text(
        "name: demo\n"
        "ports_env: .ports\n"
        "forwards:\n"
        "  web:\n"
        "    selector: app=web,tier in (a,b)\n"
        "    context: prod\n"
        "    namespace: shop\n"
        "    ports: ['8080:http', ':9090']\n"
        "    addresses: [0.0.0.0, '::1']\n"
        "    transport: websocket\n"
        "    reconnect: {enabled: false, hold: 3s}\n"
        "    keepalive: 2s\n"
        "    quiet_connections: true\n"
    )
    plan = load_plan([tmp_path / "forwards.yaml"])
    again = plan_from_json(json.loads(json.dumps(plan_to_json(plan))))
    assert again == dataclasses.replace(plan, warnings=())
    assert again.forwards["web"].context_is_own


def test_loading_the_spec_module_does_not_load_pydantic_or_yaml() -> None:
    import subprocess

    code = (
        "import sys, pfcompose.config.spec, pfcompose.config;"
        "print(sorted(m for m in ('pydantic', 'yaml', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
    assert out.stdout.decode().strip() == "[]"


def test_targets_are_typed_once_in_the_plan_and_keep_their_json_text(tmp_path: Path) -> None:
    """Every spelling of the file becomes one type; ``config``'s JSON keeps the text."""
    from pfcompose.config.spec import spec_to_dict
    from pfcompose.config.target import PodTarget, SelectorTarget, ServiceTarget, WorkloadTarget

    (tmp_path / "forwards.yaml").write_text(
        "forwards:\n"
        "  a: {target: web-0, ports: [1]}\n"
        "  b: {target: svc/web, ports: [2]}\n"
        "  c: {target: deploy/api, ports: [3]}\n"
        "  d: {target: sts/db, ports: [4]}\n"
        "  e: {selector: {app: x}, ports: [5]}\n"
    )
    plan = load_plan([tmp_path / "forwards.yaml"])
    specs = plan.forwards
    assert [spec.to for spec in specs.values()] == [
        PodTarget("web-0"), ServiceTarget("web"), WorkloadTarget("deployment", "api"),
        WorkloadTarget("statefulset", "db"), SelectorTarget("app=x"),
    ]  # fmt: skip
    assert [(spec.target, spec.selector) for spec in specs.values()] == [
        ("pod/web-0", None), ("service/web", None), ("deployment/api", None),
        ("statefulset/db", None), (None, "app=x"),
    ]  # fmt: skip
    assert [spec.names_a_pod for spec in specs.values()] == [True, False, False, False, False]
    shown = {name: spec_to_dict(spec) for name, spec in specs.items()}
    assert (shown["a"]["target"], shown["a"]["selector"]) == ("pod/web-0", None)
    assert (shown["e"]["target"], shown["e"]["selector"]) == (None, "app=x")
    again = plan_from_json(json.loads(json.dumps(plan_to_json(plan))))
    assert [spec.to for spec in again.forwards.values()] == [s.to for s in specs.values()]
