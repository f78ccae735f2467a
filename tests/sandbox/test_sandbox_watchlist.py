"""Watch-list (``sendInitialEvents=true``) and apps/v1 watches over raw HTTP.

kubectl ≥1.35's reflectors (``kubectl wait``, ``rollout status``) open a watch with
``sendInitialEvents=true&resourceVersionMatch=NotOlderThan`` and wait for the BOOKMARK
annotated ``k8s.io/initial-events-end``; without it ``kubectl wait`` timed out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from pfcompose.sandbox.server import Sandbox
from pfcompose.wire.endpoint import open_transport
from pfcompose.wire.http import http_request, http_stream

STATE: dict[str, Any] = {
    "pods": [
        {"name": "web-1", "labels": {"app": "web"}, "ports": [8080]},
        {"name": "web-2", "labels": {"app": "web"}, "phase": "Pending", "ready": False,
         "ports": [8080]},
    ],
    "deployments": [
        {"name": "api", "replicas": 1,
         "template": {"labels": {"app": "api"}, "ports": [9000]}},
        {"name": "big", "replicas": 3,
         "template": {"labels": {"app": "big"}, "ports": [9000]}},
    ],
}
WATCHLIST = "watch=true&allowWatchBookmarks=true&sendInitialEvents=true" \
            "&resourceVersionMatch=NotOlderThan"


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


def summary(event: dict[str, Any]) -> tuple[str, str]:
    meta = event["object"]["metadata"]
    if event["type"] == "BOOKMARK":
        return "BOOKMARK", meta["annotations"]["k8s.io/initial-events-end"]
    return event["type"], meta["name"]


async def first_events(sb: Sandbox, target: str, count: int,
                       then: Any = None) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch (``then()`` runs after the first ``count - 1``)."""
    transport = await open_transport(sb.endpoint)
    try:
        async with http_stream(transport, sb.endpoint, "GET", target) as (response, lines):
            assert response.status_code == 200
            events: list[dict[str, Any]] = []
            with trio.fail_after(5):
                async for line in lines:
                    events.append(json.loads(line))
                    if len(events) == count - 1 and then is not None:
                        then()
                    if len(events) == count:
                        break
            return events
    finally:
        await transport.aclose()


async def test_pod_watchlist_ends_initial_events_with_a_bookmark(sandbox: Sandbox) -> None:
    rv = str(sandbox.state.resource_version)
    events = await first_events(
        sandbox, f"/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&{WATCHLIST}", 4,
        then=lambda: sandbox.set_phase("web-2", "Running"))
    assert [summary(e) for e in events] == [("ADDED", "web-1"), ("ADDED", "web-2"),
                                            ("BOOKMARK", "true"), ("MODIFIED", "web-2")]
    bookmark = events[2]["object"]
    assert (bookmark["kind"], bookmark["apiVersion"]) == ("Pod", "v1")
    assert bookmark["metadata"]["resourceVersion"] == rv


async def test_pod_watchlist_field_selector_and_no_match(sandbox: Sandbox) -> None:
    events = await first_events(
        sandbox, f"/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-2"
                 f"&{WATCHLIST}", 2)
    assert [summary(e) for e in events] == [("ADDED", "web-2"), ("BOOKMARK", "true")]
    events = await first_events(
        sandbox, f"/api/v1/namespaces/default/pods?labelSelector=app%3Dnone&{WATCHLIST}", 1)
    assert [summary(e) for e in events] == [("BOOKMARK", "true")]


async def test_pod_watchlist_ignores_the_resource_version(sandbox: Sandbox) -> None:
    """NotOlderThan with a resourceVersion: still the current objects, then the bookmark."""
    rv = sandbox.state.resource_version
    events = await first_events(
        sandbox, f"/api/v1/pods?labelSelector=app%3Dweb&resourceVersion={rv}&{WATCHLIST}", 3)
    assert [summary(e) for e in events] == [("ADDED", "web-1"), ("ADDED", "web-2"),
                                            ("BOOKMARK", "true")]


async def test_deployment_watch(sandbox: Sandbox) -> None:
    events = await first_events(
        sandbox, f"/apis/apps/v1/namespaces/default/deployments"
                 f"?fieldSelector=metadata.name%3Dapi&{WATCHLIST}", 2)
    assert [summary(e) for e in events] == [("ADDED", "api"), ("BOOKMARK", "true")]
    assert events[1]["object"]["kind"] == "Deployment"
    # a plain watch without a version starts with ADDED for every deployment
    events = await first_events(sandbox, "/apis/apps/v1/deployments?watch=true", 2)
    assert [summary(e) for e in events] == [("ADDED", "api"), ("ADDED", "big")]


async def test_deployment_watch_from_a_version_sends_nothing(sandbox: Sandbox) -> None:
    rv = sandbox.state.resource_version
    transport = await open_transport(sandbox.endpoint)
    try:
        async with http_stream(transport, sandbox.endpoint, "GET",
                               f"/apis/apps/v1/namespaces/default/deployments?watch=true"
                               f"&resourceVersion={rv}&timeoutSeconds=1") as (response, lines):
            assert response.status_code == 200
            with trio.fail_after(5):
                assert [line async for line in lines] == []
    finally:
        await transport.aclose()


async def test_deployment_watch_bad_field_selector(sandbox: Sandbox) -> None:
    transport = await open_transport(sandbox.endpoint)
    try:
        response, body = await http_request(
            transport, sandbox.endpoint, "GET",
            "/apis/apps/v1/deployments?watch=true&fieldSelector=status.phase%3DRunning", [])
    finally:
        await transport.aclose()
    assert response.status_code == 400
    assert json.loads(body)["message"].startswith('"status.phase" is not a known field selector')


async def test_named_watch_is_refused(sandbox: Sandbox) -> None:
    transport = await open_transport(sandbox.endpoint)
    try:
        response, _ = await http_request(
            transport, sandbox.endpoint, "GET",
            "/apis/apps/v1/namespaces/default/deployments/api?watch=true", [])
    finally:
        await transport.aclose()
    assert response.status_code == 405


async def test_deployment_conditions(sandbox: Sandbox) -> None:
    """``kubectl wait --for=condition=Available`` reads these."""
    transport = await open_transport(sandbox.endpoint)
    try:
        conds = {}
        for name in ("api", "big"):
            _, body = await http_request(
                transport, sandbox.endpoint, "GET",
                f"/apis/apps/v1/namespaces/default/deployments/{name}", [])
            conds[name] = {c["type"]: c["status"] for c in json.loads(body)["status"]["conditions"]}
    finally:
        await transport.aclose()
    assert conds["api"] == {"Available": "True", "Progressing": "True"}
    await sandbox.kill_pod(next(name for _, name in sandbox.state.pods
                                if name.startswith("big-")))
    transport = await open_transport(sandbox.endpoint)
    try:
        _, body = await http_request(transport, sandbox.endpoint, "GET",
                                     "/apis/apps/v1/namespaces/default/deployments/big", [])
    finally:
        await transport.aclose()
    status = json.loads(body)["status"]
    assert status["availableReplicas"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "False"
