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
