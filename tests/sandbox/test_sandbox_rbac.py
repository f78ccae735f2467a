"""Sandbox RBAC (issue 12 §3): users by token or client certificate, rules by verb /
resource / namespace, enforced on REST and port-forward upgrades; 403s in the API
server's words (kubectl is the judge); SelfSubjectAccessReview (kubectl auth can-i);
rules changed at run time apply at once."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from pfcompose.sandbox import rbac
from pfcompose.sandbox.pytest_plugin import (
    kubectl_port_forward,
    requires_kubectl,
    run_kubectl,
    start_sandbox_process,
)
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State, StateError

kubectl = [pytest.mark.kubectl, requires_kubectl]

STATE: dict[str, Any] = {
    "pods": [{"name": "x", "namespace": "shop", "labels": {"app": "x"},
              "ports": [{"containerPort": 5000, "serve": "echo"}]}],
    "deployments": [{"name": "web", "namespace": "shop", "replicas": 0,
                     "selector": {"app": "x"}}],
    "users": [{"name": "bob", "token": "bob-token", "groups": ["dev"]},
              {"name": "carol"}],
    "rbac": [{"name": "read", "subjects": ["bob", "carol"], "verbs": ["get", "list"],
              "resources": ["pods"], "namespaces": ["shop"]},
             {"name": "dev-pf", "subjects": ["group:dev"], "verbs": ["get"],
              "resources": ["pods/portforward"]}],
}


def _forbidden(user: str, verb: str, resource: str, name: str = "", group: str = "",
               ns: str = "shop") -> str:
    base = resource.split("/")[0]
    qualified = f"{base}.{group}" if group else base
    head = f'{qualified} "{name}"' if name else qualified
    return (f'{head} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" in the namespace "{ns}"')


def test_attributes_like_request_info() -> None:
    a = rbac.attributes_of("GET", "/api/v1/namespaces/shop/pods", {"watch": ["true"]})
    assert (a.verb, a.resource, a.namespace, a.name) == ("watch", "pods", "shop", "")
    a = rbac.attributes_of("POST", "/api/v1/namespaces/shop/pods/x/portforward", {})
    assert (a.verb, a.full_resource, a.name) == ("create", "pods/portforward", "x")
    a = rbac.attributes_of("GET", "/apis/apps/v1/namespaces/shop/deployments/web", {})
    assert (a.verb, a.group, a.resource) == ("get", "apps", "deployments")
    a = rbac.attributes_of("GET", "/api/v1/namespaces/shop", {})
    assert (a.resource, a.namespace, a.name) == ("namespaces", "shop", "shop")
    assert rbac.attributes_of("GET", "/version", {}).path == "/version"
    status = rbac.forbidden_status(rbac.User("bob"), rbac.attributes_of(
        "POST", "/api/v1/namespaces/shop/pods/x/portforward", {}))
    assert status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": _forbidden("bob", "create", "pods/portforward", "x"),
        "reason": "Forbidden", "details": {"name": "x", "kind": "pods"}, "code": 403}


@pytest.mark.parametrize(("state", "message"), [
    ({"users": [{"token": "t"}]}, "<state>: users[0]: name is required"),
    ({"rbac": [{"subjects": ["a"], "verbs": ["get"]}]}, "<state>: rbac[0]: resources is required"),
    ({"rbac": [{"subjects": "a", "verbs": "get", "resources": "pods", "who": 1}]},
     "<state>: rbac[0]: unknown key 'who' (expected name, subjects, verbs, resources, "
     "namespaces, apiGroups)"),
    ({"rbac": {"a": 1}}, "<state>: rbac: expected a list"),
])
def test_bad_sections_are_one_line(state: dict[str, Any], message: str) -> None:
    with pytest.raises(StateError) as err:
        State.from_dict(state)
    assert str(err.value) == message


async def _request(sb: Sandbox, method: str, path: str, token: str | None,
                   body: Any = None) -> tuple[int, Any]:
    """urllib in a worker thread (the sandbox runs in this trio loop)."""
    return await trio.to_thread.run_sync(_blocking_request, sb.url, method, path, token, body)


def _blocking_request(url: str, method: str, path: str, token: str | None,
                      body: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_rest_rules_tokens_and_review(tmp_path: Path) -> None:
    async with run_sandbox(State.from_dict(STATE)) as sb:
        assert (await _request(sb, "GET", "/api/v1/namespaces/shop/pods/x", "bob-token"))[0] == 200
        code, body = await _request(sb, "GET", "/api/v1/namespaces/default/pods", "bob-token")
        assert (code, body["message"]) == (403, 'pods is forbidden: User "bob" cannot list '
                                                'resource "pods" in API group "" in the '
                                                'namespace "default"')
        code, body = await _request(sb, "GET", "/apis/apps/v1/namespaces/shop/deployments/web",
                              "bob-token")
        assert body["message"] == _forbidden("bob", "get", "deployments", "web", "apps")
        assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
        assert (await _request(sb, "GET", "/api/v1/pods", "nobody"))[0] == 401
        code, body = await _request(sb, "GET", "/api/v1/namespaces/shop/pods", None)
        assert body["message"].startswith('pods is forbidden: User "system:anonymous"')
        assert (await _request(sb, "GET", "/version", None))[0] == 200  # non-resource: open
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": "other", "verb": "get",
                                                  "resource": "pods",
                                                  "subresource": "portforward"}}}
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        code, answer = await _request(sb, "POST", path, "bob-token", review)
        assert (code, answer["status"]["allowed"]) == (201, True)  # group:dev, cluster-wide
        review["spec"]["resourceAttributes"]["verb"] = "create"
        _, answer = await _request(sb, "POST", path, "bob-token", review)
        assert answer["status"] == {"allowed": False}
        # the rules change at run time: the very next request sees them
        code, _ = await _request(sb, "POST", "/_sandbox/rbac", None, {"rbac": [
            {"subjects": ["bob"], "verbs": ["*"], "resources": ["*"]}]})
        assert code == 200
        _, answer = await _request(sb, "POST", path, "bob-token", review)
        assert answer["status"]["allowed"] is True
        assert (await _request(sb, "GET", "/api/v1/namespaces/default/pods", "bob-token"))[0] == 200
        bad = {"rbac": [{"verbs": "get"}]}
        code, body = await _request(sb, "POST", "/_sandbox/rbac", None, bad)
        assert (code, body["message"]) == (400, "/_sandbox/rbac: rbac[0]: subjects is required")
        code, body = await _request(sb, "GET", "/_sandbox/rbac", None)
        assert "bob-token" not in json.dumps(body) and body["enabled"] is True


@pytest.mark.kubectl
@requires_kubectl
async def test_kubectl_sees_the_api_servers_words(tmp_path: Path) -> None:
    async with run_sandbox(State.from_dict(STATE), tls=True) as sb:
        bob = sb.write_user_kubeconfig("bob", tmp_path / "bob")
        r = await run_kubectl(bob, "get", "pods", "-n", "shop", "-o", "name")
        assert (r.returncode, r.stdout) == (0, b"pod/x\n"), r.stderr
        r = await run_kubectl(bob, "get", "deploy", "web", "-n", "shop")
        assert r.stderr.decode().strip() == (
            "Error from server (Forbidden): " + _forbidden("bob", "get", "deployments", "web",
                                                           "apps"))
        # kubectl port-forward: the WebSocket GET is allowed `get` (group dev), but kubectl
        # 1.32 then needs nothing more; SPDY (POST) needs create
        for websockets in (False,):
            r = await run_kubectl(bob, "port-forward", "-n", "shop", "pod/x", ":5000",
                                  websockets=websockets, timeout=20)
            assert r.returncode == 1
            assert r.stderr.decode().strip() == (
                "error: error upgrading connection: "
                + _forbidden("bob", "create", "pods/portforward", "x"))
        async with kubectl_port_forward(bob, "pod/x", ":5000", namespace="shop"):
            pass  # the WebSocket tunnel: GET → get pods/portforward, allowed
        # kubectl auth can-i (a protobuf SelfSubjectAccessReview) against the same rules
        for args, answer in ((["get", "pods"], b"yes\n"), (["list", "pods"], b"yes\n"),
                             (["watch", "pods"], b"no\n"), (["get", "services"], b"no\n"),
                             (["create", "pods", "--subresource=portforward"], b"no\n"),
                             (["get", "pods", "--subresource=portforward"], b"yes\n")):
            r = await run_kubectl(bob, "auth", "can-i", *args, "-n", "shop")
            assert r.stdout == answer, (args, r.stderr)
            assert r.returncode == (0 if answer == b"yes\n" else 1)
        # carol has no token: her client certificate (CN carol) names her
        carol = sb.write_user_kubeconfig("carol", tmp_path / "carol")
        r = await run_kubectl(carol, "get", "pods", "-n", "shop", "-o", "name")
        assert (r.returncode, r.stdout) == (0, b"pod/x\n"), r.stderr
        r = await run_kubectl(carol, "auth", "can-i", "get", "pods", "--subresource=portforward",
                              "-n", "shop")
        assert r.stdout == b"no\n"
        # the sandbox's own kubeconfig (system:masters) may do anything
        r = await run_kubectl(sb.kubeconfig_path, "auth", "can-i", "create", "pods",
                              "--subresource=portforward", "-n", "shop")
        assert r.stdout == b"yes\n"


@pytest.mark.kubectl
@requires_kubectl
async def test_kubectl_websocket_needs_create_from_1_35(tmp_path: Path) -> None:
    """KEP-4006: at 1.35 the WebSocket GET also needs create (kubectl falls back to SPDY,
    which needs create too: the error names create)."""
    async with run_sandbox(State.from_dict(STATE), tls=True, emulate="1.35") as sb:
        bob = sb.write_user_kubeconfig("bob", tmp_path / "bob")
        r = await run_kubectl(bob, "port-forward", "-n", "shop", "pod/x", ":5000", timeout=20)
        assert r.returncode == 1
        assert r.stderr.decode().strip() == (
            "error: error upgrading connection: "
            + _forbidden("bob", "create", "pods/portforward", "x"))
        ws = [t for m, t in sb.api.requests if m == "GET" and t.endswith("/portforward")]
        assert ws, "kubectl tried the WebSocket first"


@pytest.mark.kubectl
@requires_kubectl
async def test_sandbox_process_state_file_and_admin_api(tmp_path: Path) -> None:
    with start_sandbox_process(STATE, tmp_path, extra_args=["--tls"]) as proc:
        kubeconfig = tmp_path / "bob"
        doc = yaml.safe_load(proc.kubeconfig_path.read_text())
        doc["users"][0]["user"] = {"token": "bob-token"}  # bob, not the admin's certificate
        kubeconfig.write_text(yaml.safe_dump(doc))
        r = await run_kubectl(kubeconfig, "auth", "can-i", "watch", "pods", "-n", "shop")
        assert r.stdout == b"no\n"
        ca = doc["clusters"][0]["cluster"]["certificate-authority"]
        req = urllib.request.Request(proc.url + "/_sandbox/rbac", method="POST", data=json.dumps(
            {"rbac": [{"subjects": ["bob"], "verbs": ["watch"], "resources": ["pods"]}]}).encode())
        context = ssl.create_default_context(cafile=ca)
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            assert resp.status == 200
        r = await run_kubectl(kubeconfig, "auth", "can-i", "watch", "pods", "-n", "shop")
        assert r.stdout == b"yes\n"


def test_bad_rbac_in_state_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "state.yaml"
    bad.write_text("users:\n  - {name: bob, token: 3}\n")
    r = subprocess.run([sys.executable, "-m", "pfcompose", "sandbox", "--state", str(bad)],
                       capture_output=True, timeout=30, check=False)
    assert (r.returncode, r.stderr.decode()) == (
        2, f"error: {bad}: users[0].token: expected a string\n")
