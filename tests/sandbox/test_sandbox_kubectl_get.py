"""The real kubectl against the sandbox: discovery, get, selectors, errors, TLS and auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pfcompose.sandbox.pytest_plugin import requires_kubectl, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State

pytestmark = [requires_kubectl, pytest.mark.kubectl]

STATE: dict[str, Any] = {
    "namespaces": ["shop"],
    "pods": [
        {"name": "web-1", "labels": {"app": "web", "tier": "edge"}, "ports": [8080]},
        {"name": "web-2", "labels": {"app": "web", "tier": "back"}, "ports": [8080]},
        {"name": "db-0", "labels": {"app": "db"}, "ports": [5432]},
        {"name": "other", "namespace": "shop", "labels": {"app": "web"}, "ports": [80]},
    ],
    "services": [{"name": "web", "selector": {"app": "web"}, "ports": [{"port": 80}]}],
    "deployments": [{"name": "api", "replicas": 1,
                     "template": {"labels": {"app": "api"}, "ports": [9000]}}],
}


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


def names(stdout: bytes) -> list[str]:
    return [line.split()[0] for line in stdout.decode().splitlines()[1:]]


async def test_get_pods_services_deployments(sandbox: Sandbox) -> None:
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods")
    assert r.returncode == 0, r.stderr
    assert names(r.stdout)[:1] == [n for n in names(r.stdout) if n.startswith("api-")]
    assert sorted(names(r.stdout))[1:] == ["db-0", "web-1", "web-2"]
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "svc", "-o", "name")
    assert r.stdout == b"service/web\n"
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "deploy", "api", "-o",
                          "jsonpath={.spec.selector.matchLabels.app}")
    assert r.stdout == b"api"
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods", "-n", "shop", "-o", "name")
    assert r.stdout == b"pod/other\n"
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "ns", "-o", "name")
    assert r.stdout == b"namespace/default\nnamespace/kube-system\nnamespace/shop\n"


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", b"pod/web-1\npod/web-2\n"),
    ("app=web,tier!=edge", b"pod/web-2\n"),
    ("tier in (edge,back)", b"pod/web-1\npod/web-2\n"),
    ("app notin (web,api)", b"pod/db-0\n"),
    ("!tier,app,app notin (api)", b"pod/db-0\n"),
])
async def test_label_selectors(sandbox: Sandbox, selector: str, expected: bytes) -> None:
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods", "-l", selector, "-o", "name")
    assert (r.returncode, r.stdout) == (0, expected), r.stderr


async def test_not_found_as_kubectl_prints_it(sandbox: Sandbox) -> None:
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pod", "nope")
    assert r.returncode == 1
    assert r.stderr == b'Error from server (NotFound): pods "nope" not found\n'
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "deploy", "nope")
    assert r.stderr == b'Error from server (NotFound): deployments.apps "nope" not found\n'


async def test_tls_with_client_certificate_and_token() -> None:
    async with run_sandbox(State.from_dict(STATE), tls=True, require_client_cert=True,
                           token="t0ken") as sb:
        assert sb.url.startswith("https://127.0.0.1:")
        r = await run_kubectl(sb.kubeconfig_path, "get", "pods", "-l", "app=db", "-o", "name")
        assert (r.returncode, r.stdout) == (0, b"pod/db-0\n"), r.stderr
        # The same kubeconfig without the token: 401 as kubectl words it.
        text = sb.kubeconfig_path.read_text().replace("token: t0ken", "token: wrong")
        bad = sb.workdir / "bad-kubeconfig"
        bad.write_text(text)
        r = await run_kubectl(bad, "get", "pods")
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == (
            b"error: You must be logged in to the server "
            b"(the server has asked for the client to provide credentials)")


async def test_get_prints_server_side_columns() -> None:
    created = (datetime.now(UTC) - timedelta(hours=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = State.from_dict({
        "pods": [{"name": "a", "creationTimestamp": created, "ports": [80]},
                 {"name": "b", "creationTimestamp": created, "phase": "Pending", "ready": False,
                  "restarts": 3}],
        "services": [{"name": "s", "clusterIP": "10.96.0.99", "ports": [{"port": 80}]}],
    })
    async with run_sandbox(state) as sb:
        sb.state.services[("default", "s")].created = datetime.now(UTC) - timedelta(minutes=30)
        r = await run_kubectl(sb.kubeconfig_path, "get", "pods")
        assert r.stdout.decode().splitlines() == [
            "NAME   READY   STATUS    RESTARTS   AGE",
            "a      1/1     Running   0          2d2h",
            "b      0/1     Pending   3          2d2h",
        ]
        r = await run_kubectl(sb.kubeconfig_path, "get", "svc")
        assert r.stdout.decode().splitlines() == [
            "NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE",
            "s      ClusterIP   10.96.0.99   <none>        80/TCP    30m",
        ]
