"""`pfcompose check` and `up --check` (issue 12 §3): one SelfSubjectAccessReview per rule a
forward needs; one line per forward; --json; exit 0/1; kubectl auth can-i agrees."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.config import load_plan
from pfcompose.kube.permissions import Need, needs
from pfcompose.sandbox.pytest_plugin import requires_kubectl, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State

STATE: dict[str, Any] = {
    "pods": [{"name": "x", "namespace": "shop", "labels": {"app": "x"},
              "ports": [{"containerPort": 5000, "serve": "echo"}]}],
    "services": [{"name": "xs", "namespace": "shop", "selector": {"app": "x"},
                  "ports": [{"port": 80, "targetPort": 5000}]}],
    "deployments": [{"name": "web", "namespace": "shop", "replicas": 0, "selector": {"app": "x"}}],
    "users": [{"name": "bob", "token": "bob-token"}],
    "rbac": [{"subjects": ["bob"], "verbs": ["get", "list", "watch"],
              "resources": ["pods", "services"], "namespaces": ["shop"]}],
}

FILE = """\
forwards:
  db:
    target: pod/x
    namespace: shop
    ports: [":5000"]
  api:
    target: svc/xs
    namespace: shop
    transport: spdy
    ports: [":80"]
  ws:
    target: pod/x
    namespace: shop
    transport: websocket
    ports: [":5000"]
  web:
    target: deploy/web
    namespace: shop
    transport: spdy
    ports: [":80"]
"""

PF = {"subjects": ["bob"], "verbs": ["get", "create"], "resources": ["pods/portforward"]}
APPS = {"subjects": ["bob"], "verbs": ["get"], "resources": ["deployments"],
        "apiGroups": ["apps"]}


async def _pfcompose(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(30):
        r = await trio.run_process([sys.executable, "-m", "pfcompose", *args],
                                   capture_stdout=True, capture_stderr=True, check=False)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


async def _setup(sb: Sandbox, tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "forwards.yaml").write_text(FILE)
    kubeconfig = sb.write_user_kubeconfig("bob", tmp_path / "bob")
    return str(tmp_path / "forwards.yaml"), str(kubeconfig)


@pytest.mark.parametrize(("emulate", "ws_verbs"), [(None, "get"), ("1.35", "get+create")])
async def test_check_lines_exit_status_and_json(tmp_path: Path, emulate: str | None,
                                                ws_verbs: str) -> None:
    async with run_sandbox(State.from_dict(STATE), emulate=emulate) as sb:
        file, kubeconfig = await _setup(sb, tmp_path)
        code, out, err = await _pfcompose("check", "-f", file, "--kubeconfig", kubeconfig)
        pf = "pods/portforward in namespace shop"
        ws = (f"get {pf}" if ws_verbs == "get" else f"get {pf}; create {pf}")
        auto = f"create {pf}"  # what `up` reports after auto's fallback to SPDY
        assert (code, err) == (1, "")
        assert out.splitlines() == [
            f"db:  missing: {auto}",
            f"api: missing: create {pf}",
            f"ws:  missing: {ws}",
            f"web: missing: get deployments.apps in namespace shop; create {pf}",
        ]
        code, out, _ = await _pfcompose("check", "-f", file, "--kubeconfig", kubeconfig,
                                        "--json", "db")
        doc = json.loads(out)
        assert (code, doc["forward"], doc["allowed"]) == (1, "db", False)
        assert doc["checked"][:3] == ["get pods in namespace shop", "list pods in namespace shop",
                                      "watch pods in namespace shop"]
        # the rules are granted: every forward is allowed, exit 0
        sb.state.rbac.update({"rbac": [*STATE["rbac"], PF, APPS]})
        code, out, _ = await _pfcompose("check", "-f", file, "--kubeconfig", kubeconfig)
        assert (code, out.split()) == (0, ["db:", "allowed", "api:", "allowed", "ws:", "allowed",
                                           "web:", "allowed"])


async def test_up_check_refuses_to_start_and_names_the_rule(tmp_path: Path) -> None:
    async with run_sandbox(State.from_dict(STATE)) as sb:
        file, kubeconfig = await _setup(sb, tmp_path)
        code, out, _ = await _pfcompose("up", "--check", "-f", file, "--kubeconfig", kubeconfig,
                                        "api")
        assert (code, out) == (1, "api: missing: create pods/portforward in namespace shop\n")
        assert not any("/portforward" in t for _, t in sb.api.requests)  # nothing was dialed


async def test_check_unreachable_server_is_one_line(tmp_path: Path) -> None:
    async with run_sandbox(State.from_dict(STATE)) as sb:
        file, kubeconfig = await _setup(sb, tmp_path)
        await sb.stop_api()
        code, out, _ = await _pfcompose("check", "-f", file, "--kubeconfig", kubeconfig, "db")
        assert code == 1
        assert out.startswith("db: error: cannot ask the API server: cannot reach http://")
        assert len(out.splitlines()) == 1


def test_needs_per_transport_and_version(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FILE.replace("transport: spdy\n", "transport: auto\n"))
    plan = load_plan([tmp_path / "f.yaml"])
    _, alternatives = needs(plan.forwards["api"], "shop", (1, 34))
    assert [[str(n) for n in option] for option in alternatives] == [
        ["create pods/portforward in namespace shop"], ["get pods/portforward in namespace shop"]]
    _, alternatives = needs(plan.forwards["ws"], "shop", (1, 35))
    assert [n.verb for n in alternatives[0]] == ["get", "create"]
    assert str(Need("get", "deployments", "shop", group="apps")) == (
        "get deployments.apps in namespace shop")


@pytest.mark.kubectl
@requires_kubectl
async def test_kubectl_auth_can_i_agrees(tmp_path: Path) -> None:
    """Every rule `check` reports, kubectl auth can-i answers the same against the sandbox."""
    state = {**STATE, "rbac": [*STATE["rbac"], {"subjects": ["bob"], "verbs": ["get"],
                                                "resources": ["pods/portforward"]}]}
    async with run_sandbox(State.from_dict(state), tls=True) as sb:
        file, kubeconfig = await _setup(sb, tmp_path)
        code, out, _ = await _pfcompose("check", "-f", file, "--kubeconfig", kubeconfig, "--json")
        assert code == 1
        for line in out.splitlines():
            doc = json.loads(line)
            for rule in doc["checked"]:
                verb, what, _, _, namespace = rule.split()
                resource, _, sub = what.partition("/")
                args = [verb, resource] + ([f"--subresource={sub}"] if sub else [])
                r = await run_kubectl(Path(kubeconfig), "auth", "can-i", *args, "-n", namespace)
                assert (r.stdout == b"yes\n") == (rule not in doc["missing"]), (rule, r.stderr)
