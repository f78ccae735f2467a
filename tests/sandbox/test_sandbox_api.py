"""The emulated API server over raw HTTP/1.1: shapes, selectors, errors, watch, auth."""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
import trio

from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.wire.endpoint import open_transport
from pfcompose.wire.http import http_request, http_stream
from pfcompose.wire.httpmsg import build_request

STATE: dict[str, Any] = {
    "namespaces": ["shop"],
    "pods": [
        {"name": "web-1", "labels": {"app": "web", "tier": "edge"},
         "ports": [{"containerPort": 8080, "name": "http"}]},
        {"name": "web-2", "labels": {"app": "web", "tier": "back"}, "phase": "Pending",
         "ready": False, "ports": [8080]},
        {"name": "db-0", "namespace": "shop", "labels": {"app": "db"}, "ports": [5432]},
    ],
    "services": [
        {"name": "web", "selector": {"app": "web"},
         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        {"name": "headless", "clusterIP": "None", "selector": {"app": "web"},
         "ports": [{"port": 8080}]},
    ],
    "deployments": [
        {"name": "api", "replicas": 2,
         "template": {"labels": {"app": "api"},
                      "ports": [{"containerPort": 9000, "name": "grpc"}]}},
    ],
    "statefulsets": [{"name": "cache", "namespace": "shop", "replicas": 1,
                      "template": {"labels": {"app": "cache"}, "ports": [6379]}}],
    "replicasets": [{"name": "old", "selector": {"app": "web"}}],
}


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


async def get(sb: Sandbox, target: str, headers: list[tuple[str, str]] | None = None
              ) -> tuple[int, Any]:
    transport = await open_transport(sb.endpoint)
    try:
        response, body = await http_request(transport, sb.endpoint, "GET", target, headers or [])
    finally:
        await transport.aclose()
    ctype = dict(response.headers).get(b"content-type", b"")
    return response.status_code, json.loads(body) if ctype == b"application/json" else body


async def test_version_and_discovery(sandbox: Sandbox) -> None:
    status, version = await get(sandbox, "/version")
    assert status == 200 and version["major"] == "1" and version["minor"] == "32"
    _, api = await get(sandbox, "/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, apis = await get(sandbox, "/apis")
    assert [g["name"] for g in apis["groups"]] == ["apps"]
    _, v1 = await get(sandbox, "/api/v1")
    names = {r["name"]: r for r in v1["resources"]}
    assert names["pods"]["shortNames"] == ["po"] and names["services"]["shortNames"] == ["svc"]
    assert names["pods/portforward"]["verbs"] == ["create", "get"]
    _, apps = await get(sandbox, "/apis/apps/v1")
    assert {r["name"] for r in apps["resources"]} == {"deployments", "replicasets", "statefulsets"}


async def test_get_and_list_with_selectors(sandbox: Sandbox) -> None:
    status, pod = await get(sandbox, "/api/v1/namespaces/default/pods/web-1")
    assert status == 200
    assert (pod["apiVersion"], pod["kind"], pod["metadata"]["name"]) == ("v1", "Pod", "web-1")
    assert pod["spec"]["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert pod["status"]["phase"] == "Running"

    async def names(query: str, ns: str = "default") -> list[str]:
        _, body = await get(sandbox, f"/api/v1/namespaces/{ns}/pods?{query}")
        assert body["kind"] == "PodList"
        return [p["metadata"]["name"] for p in body["items"]]

    assert await names("labelSelector=app%3Dweb") == ["web-1", "web-2"]
    assert await names("labelSelector=app%3Dweb%2Ctier%3Dedge") == ["web-1"]
    assert await names("labelSelector=tier+in+%28back%2Cother%29") == ["web-2"]
    assert await names("labelSelector=tier+notin+%28back%29%2Capp") == [
        "api-" + p.split("-", 1)[1] for p in await names("labelSelector=app%3Dapi")] + ["web-1"]
    assert await names("labelSelector=%21tier%2Capp%3Dweb") == []
    assert await names("labelSelector=app%3Dcache", "shop") == ["cache-0"]
    assert await names("fieldSelector=metadata.name%3Dweb-2") == ["web-2"]
    _, every = await get(sandbox, "/api/v1/pods")
    assert len(every["items"]) == 6


async def test_not_found_texts(sandbox: Sandbox) -> None:
    status, body = await get(sandbox, "/api/v1/namespaces/default/pods/nope")
    assert status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "nope" not found', "reason": "NotFound",
                    "details": {"name": "nope", "kind": "pods"}, "code": 404}
    _, body = await get(sandbox, "/api/v1/namespaces/default/services/nope")
    assert body["message"] == 'services "nope" not found'
    _, body = await get(sandbox, "/apis/apps/v1/namespaces/default/deployments/nope")
    assert body["message"] == 'deployments.apps "nope" not found'
    _, body = await get(sandbox, "/api/v1/namespaces/nope")
    assert body["message"] == 'namespaces "nope" not found'
    status, text = await get(sandbox, "/apis/batch/v1/jobs")
    assert (status, text) == (404, b"404 page not found\n")


async def test_services_and_workloads(sandbox: Sandbox) -> None:
    _, svc = await get(sandbox, "/api/v1/namespaces/default/services/web")
    assert svc["spec"]["selector"] == {"app": "web"}
    assert svc["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80,
                                     "targetPort": "http"}]
    _, headless = await get(sandbox, "/api/v1/namespaces/default/services/headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"][0]["targetPort"] == 8080
    _, deploy = await get(sandbox, "/apis/apps/v1/namespaces/default/deployments/api")
    assert deploy["kind"] == "Deployment"
    assert deploy["spec"]["selector"] == {"matchLabels": {"app": "api"}}
    assert deploy["status"]["readyReplicas"] == 2
    _, sts = await get(sandbox, "/apis/apps/v1/namespaces/shop/statefulsets/cache")
    assert sts["kind"] == "StatefulSet"
    _, rs = await get(sandbox, "/apis/apps/v1/namespaces/default/replicasets/old")
    assert rs["kind"] == "ReplicaSet" and rs["status"]["replicas"] == 2  # web-1 and web-2
    _, ns = await get(sandbox, "/api/v1/namespaces/shop")
    assert ns["kind"] == "Namespace" and ns["status"]["phase"] == "Active"


async def test_keep_alive(sandbox: Sandbox) -> None:
    """kubectl reuses connections: several requests on one socket."""
    transport = await open_transport(sandbox.endpoint)
    conn = h11.Connection(h11.CLIENT)
    try:
        for target in ("/version", "/api", "/api/v1/namespaces/default/pods/web-1"):
            request = build_request(sandbox.endpoint, "GET", target, [])
            await transport.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await transport.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert status == 200
            conn.start_next_cycle()
    finally:
        await transport.aclose()


async def test_watch_events(sandbox: Sandbox) -> None:
    _, listed = await get(sandbox, "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
    rv = listed["metadata"]["resourceVersion"]
    transport = await open_transport(sandbox.endpoint)
    try:
        async with http_stream(
            transport, sandbox.endpoint, "GET",
            f"/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&resourceVersion={rv}"
            "&watch=true",
        ) as (response, lines):
            assert response.status_code == 200
            assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
            sandbox.set_phase("web-2", "Running")
            sandbox.set_ready("web-2", True)
            await sandbox.kill_pod("web-1")
            await sandbox.kill_pod(next(iter(p for p in sandbox.state.pods if p[1] == "db-0"))[1],
                                   "shop")  # not selected: no event
            events = []
            with trio.fail_after(5):
                async for line in lines:
                    event = json.loads(line)
                    events.append((event["type"], event["object"]["metadata"]["name"],
                                   event["object"]["status"]["phase"]))
                    if len(events) == 3:
                        break
            assert events == [("MODIFIED", "web-2", "Running"), ("MODIFIED", "web-2", "Running"),
                              ("DELETED", "web-1", "Running")]
    finally:
        await transport.aclose()


async def test_watch_without_version_starts_with_added(sandbox: Sandbox) -> None:
    transport = await open_transport(sandbox.endpoint)
    try:
        async with http_stream(transport, sandbox.endpoint, "GET",
                               "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb"
                               "&watch=1&timeoutSeconds=1") as (response, lines):
            assert response.status_code == 200
            with trio.fail_after(5):
                events = [json.loads(line) async for line in lines]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "web-1"), ("ADDED", "web-2")]
    finally:
        await transport.aclose()


async def test_bearer_token_required() -> None:
    async with run_sandbox(State.from_dict(STATE), token="s3cret") as sb:
        status, body = await get(sb, "/api/v1/namespaces/default/pods/web-1",
                                 [("Authorization", "Bearer wrong")])
        assert status == 401 and body["message"] == "Unauthorized"
        status, _ = await get(sb, "/api/v1/namespaces/default/pods/web-1")  # endpoint has it
        assert status == 200


async def test_portforward_without_upgrade(sandbox: Sandbox) -> None:
    status, body = await get(sandbox, "/api/v1/namespaces/default/pods/web-1/portforward")
    assert (status, body["message"]) == (400, "Upgrade request required")
    status, body = await get(sandbox, "/api/v1/namespaces/default/pods/nope/portforward")
    assert (status, body["message"]) == (404, 'pods "nope" not found')


async def test_portforward_to_unscheduled_pod() -> None:
    state = State.from_dict({"pods": [{"name": "u", "nodeName": None, "phase": "Pending",
                                       "ports": [80]}]})
    async with run_sandbox(state) as sb:
        transport = await open_transport(sb.endpoint)
        try:
            response, body = await http_request(
                transport, sb.endpoint, "POST", "/api/v1/namespaces/default/pods/u/portforward",
                [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                 ("X-Stream-Protocol-Version", "portforward.k8s.io")])
        finally:
            await transport.aclose()
        assert response.status_code == 400
        assert json.loads(body)["message"] == "pod u does not have a host assigned"
