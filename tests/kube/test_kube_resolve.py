"""resolve() against a fake client with canned JSON; pod choice and §10.3 port translation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from pfcompose.config.target import Target, target_from_text
from pfcompose.kube import (
    KubeApiError,
    NoReadyPod,
    PodNotRunning,
    ResolvedTarget,
    TargetError,
    pick_pod,
    resolve,
    translate_ports,
)
from pfcompose.kube.targets import label_selector


@dataclass(frozen=True)
class PortMap:  # the shape of config.PortMap
    local: int
    remote: int | str


@dataclass(frozen=True)
class Spec:  # the fields of config.ForwardSpec that resolve() reads
    target: str | None
    selector: str | None
    ports: tuple[Any, ...]
    name: str = "fw"

    @property
    def to(self) -> Target:
        return target_from_text(self.target, self.selector)


class FakeClient:
    def __init__(self, objects: Mapping[str, Any]) -> None:
        self.objects = dict(objects)
        self.calls: list[tuple[str, dict[str, str] | None]] = []

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.calls.append((path, dict(query) if query is not None else None))
        obj = self.objects.get(path)
        if obj is None:
            kind, name = path.rsplit("/", 2)[-2:]
            raise KubeApiError(404, "NotFound", f'{kind} "{name}" not found')
        if isinstance(obj, Exception):
            raise obj
        assert isinstance(obj, dict)
        return obj


def pod(
    name: str,
    *,
    phase: str = "Running",
    ready: bool = True,
    created: str = "2024-01-01T00:00:00Z",
    ready_since: str = "2024-01-01T00:00:10Z",
    deleting: bool = False,
    restarts: int = 0,
    ports: list[dict[str, Any]] | None = None,
    init_ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-02T00:00:00Z"
    spec: dict[str, Any] = {
        "nodeName": "node-1",
        "containers": [
            {
                "name": "app",
                "ports": ports
                if ports is not None
                else [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            }
        ],
    }
    if init_ports is not None:
        spec["initContainers"] = [{"name": "sidecar", "ports": init_ports}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": ready_since,
                }
            ],
            "containerStatuses": [{"name": "app", "restartCount": restarts}],
        },
    }


def pod_list(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": list(pods)}


def service(
    ports: list[dict[str, Any]],
    *,
    selector: dict[str, str] | None = None,
    cluster_ip: str = "10.96.0.10",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterIP": cluster_ip, "ports": ports}
    if selector is not None:
        spec["selector"] = selector
    return {"kind": "Service", "metadata": {"name": "web", "namespace": "ns"}, "spec": spec}


POD_PATH = "/api/v1/namespaces/ns/pods"
SVC_PATH = "/api/v1/namespaces/ns/services/web"


# --- pod/NAME -----------------------------------------------------------------------------


async def test_pod_running() -> None:
    client = FakeClient({f"{POD_PATH}/web-1": pod("web-1")})
    spec = Spec("pod/web-1", None, (PortMap(15432, 5432), PortMap(0, "http"), (None, "http")))
    result = await resolve(client, spec, "ns")
    assert result == ResolvedTarget("web-1", "ns", ((15432, 5432), (0, 8080), (8080, 8080)))
    assert client.calls == [(f"{POD_PATH}/web-1", None)]


async def test_pod_not_running_is_retryable() -> None:
    client = FakeClient({f"{POD_PATH}/web-1": pod("web-1", phase="Pending")})
    with pytest.raises(PodNotRunning) as info:
        await resolve(client, Spec("pod/web-1", None, (PortMap(80, 80),)), "ns")
    assert str(info.value) == (
        "unable to forward port because pod is not running. Current status=Pending"
    )
    assert info.value.retryable


async def test_pod_not_found_is_the_api_message() -> None:
    with pytest.raises(KubeApiError) as info:
        await resolve(FakeClient({}), Spec("pod/nope", None, (PortMap(80, 80),)), "ns")
    assert str(info.value) == 'pods "nope" not found'


async def test_forbidden_passes_through() -> None:
    denied = KubeApiError(403, "Forbidden", 'pods "web-1" is forbidden: User "bob" cannot get')
    client = FakeClient({f"{POD_PATH}/web-1": denied})
    with pytest.raises(KubeApiError) as info:
        await resolve(client, Spec("pod/web-1", None, (PortMap(80, 80),)), "ns")
    assert str(info.value) == 'pods "web-1" is forbidden: User "bob" cannot get'


async def test_namespace_and_name_are_quoted() -> None:
    client = FakeClient({"/api/v1/namespaces/a%2Fb/pods/x%3Fy": pod("x?y")})
    result = await resolve(client, Spec("pod/x?y", None, (PortMap(1, 80),)), "a/b")
    assert result.pod == "x?y"


# --- pod choice -----------------------------------------------------------------------------


async def test_selector_picks_newest_ready_not_terminating_pod() -> None:
    pods = pod_list(
        pod("old", created="2024-01-01T00:00:00Z"),
        pod("newest-terminating", created="2024-01-05T00:00:00Z", deleting=True),
        pod("newer-not-ready", created="2024-01-04T00:00:00Z", ready=False),
        pod("newer-pending", created="2024-01-04T00:00:00Z", phase="Pending", ready=False),
        pod("mid", created="2024-01-03T00:00:00Z"),
        pod("succeeded", created="2024-01-06T00:00:00Z", phase="Succeeded"),
    )
    client = FakeClient({POD_PATH: pods})
    spec = Spec(None, "app=api,tier in (edge,web)", (PortMap(9000, 8080),))
    assert await resolve(client, spec, "ns") == ResolvedTarget("mid", "ns", ((9000, 8080),))
    assert client.calls == [(POD_PATH, {"labelSelector": "app=api,tier in (edge,web)"})]


def test_pick_pod_tie_breaks() -> None:
    same = "2024-01-01T00:00:00Z"
    # same age: Ready for longer wins
    assert (
        pick_pod(
            [
                pod("b", created=same, ready_since="2024-01-01T00:05:00Z"),
                pod("a", created=same, ready_since="2024-01-01T00:09:00Z"),
            ]
        )["metadata"]["name"]
        == "b"
    )  # type: ignore[index]
    # same age and ready time: fewer restarts, then the smallest name
    assert pick_pod([pod("b", restarts=3), pod("c", restarts=1)])["metadata"]["name"] == "c"  # type: ignore[index]
    assert pick_pod([pod("c"), pod("b")])["metadata"]["name"] == "b"  # type: ignore[index]
    assert pick_pod([pod("x", ready=False)]) is None


async def test_no_ready_pod_messages() -> None:
    client = FakeClient({POD_PATH: pod_list(pod("a", ready=False), pod("b", deleting=True))})
    with pytest.raises(NoReadyPod) as info:
        await resolve(client, Spec(None, "app=web", (PortMap(80, 80),)), "ns")
    assert str(info.value) == (
        "no ready pod in namespace ns: 2 pods match selector app=web, none is running and ready"
    )
    assert info.value.retryable

    client = FakeClient(
        {
            POD_PATH: pod_list(),
            "/apis/apps/v1/namespaces/ns/deployments/web": {
                "spec": {"selector": {"matchLabels": {"app": "web"}}}
            },
        }
    )
    with pytest.raises(NoReadyPod) as info:
        await resolve(client, Spec("deployment/web", None, (PortMap(80, 80),)), "ns")
    assert str(info.value) == (
        "no ready pod for deployment/web in namespace ns: no pod matches selector app=web"
    )


# --- workloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deployment", "statefulset", "replicaset"])
async def test_workloads_use_their_label_selector(kind: str) -> None:
    workload = {
        "spec": {
            "selector": {
                "matchLabels": {"tier": "web", "app": "api"},
                "matchExpressions": [
                    {"key": "track", "operator": "In", "values": ["stable", "canary"]}
                ],
            }
        }
    }
    client = FakeClient(
        {f"/apis/apps/v1/namespaces/ns/{kind}s/api": workload, POD_PATH: pod_list(pod("api-1"))}
    )
    result = await resolve(client, Spec(f"{kind}/api", None, ((None, "http"),)), "ns")
    assert result == ResolvedTarget("api-1", "ns", ((8080, 8080),))
    assert client.calls[1] == (
        POD_PATH,
        {"labelSelector": "app=api,tier=web,track in (canary,stable)"},
    )


def test_label_selector_forms() -> None:
    assert label_selector(None) == ""
    assert label_selector({"b": "2", "a": "1"}) == "a=1,b=2"  # plain map (RC)
    expr = {
        "matchExpressions": [
            {"key": "z", "operator": "DoesNotExist"},
            {"key": "y", "operator": "Exists"},
            {"key": "x", "operator": "NotIn", "values": ["b", "a"]},
        ]
    }
    assert label_selector(expr) == "x notin (a,b),y,!z"
    with pytest.raises(TargetError) as info:
        label_selector({"matchExpressions": [{"key": "k", "operator": "Gt"}]})
    assert str(info.value) == "'Gt' is not a valid label selector operator"


async def test_unsupported_kind() -> None:
    with pytest.raises(TargetError) as info:
        await resolve(FakeClient({}), Spec("configmap/x", None, (PortMap(1, 1),)), "ns")
    assert str(info.value) == "cannot forward to configmap/x: unsupported target kind 'configmap'"


# --- services ---------------------------------------------------------------------------------


async def svc_resolve(svc: dict[str, Any], specs: tuple[Any, ...], **pod_kw: Any) -> Any:
    client = FakeClient({SVC_PATH: svc, POD_PATH: pod_list(pod("web-1", **pod_kw))})
    result = await resolve(client, Spec("service/web", None, specs), "ns")
    assert client.calls[1] == (POD_PATH, {"labelSelector": "app=web,tier=fe"})
    return result.ports


SEL = {"tier": "fe", "app": "web"}


async def test_service_numeric_target_port() -> None:
    svc = service(
        [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}], selector=SEL
    )
    ports = (PortMap(80, 80), PortMap(0, 80), PortMap(9000, 80), (None, 80), (None, "http"))
    assert await svc_resolve(svc, ports) == (
        (80, 8080),
        (0, 8080),
        (9000, 8080),
        (80, 8080),  # kubectl: `svc/web 80` → 80:8080 (local = service port)
        (80, 8080),  # `svc/web http` → local = the service port number
    )


async def test_service_named_target_port() -> None:
    svc = service([{"name": "web", "port": 80, "targetPort": "http"}], selector=SEL)
    assert await svc_resolve(svc, (PortMap(8443, "web"), (None, 80))) == ((8443, 8080), (80, 8080))
    with pytest.raises(TargetError) as info:
        await svc_resolve(svc, (PortMap(1, 80),), ports=[{"name": "other", "containerPort": 1}])
    assert str(info.value) == "Pod 'web-1' does not have a named port 'http'"


@pytest.mark.parametrize("target_port", [None, 0])
async def test_service_target_port_omitted_or_zero(target_port: int | None) -> None:
    port: dict[str, Any] = {"port": 5432}
    if target_port is not None:
        port["targetPort"] = target_port
    svc = service([port], selector=SEL)
    assert await svc_resolve(svc, (PortMap(0, 5432),)) == ((0, 5432),)


async def test_headless_service_keeps_the_port() -> None:
    svc = service([{"port": 80, "targetPort": 8080}], selector=SEL, cluster_ip="None")
    assert await svc_resolve(svc, (PortMap(1080, 80),)) == ((1080, 80),)
    with pytest.raises(TargetError) as info:
        await svc_resolve(svc, (PortMap(1080, 81),))
    assert str(info.value) == "Service web does not have a service port 81"


async def test_service_port_errors() -> None:
    svc = service([{"name": "http", "port": 80, "targetPort": 8080}], selector=SEL)
    with pytest.raises(TargetError) as info:
        await svc_resolve(svc, (PortMap(1, 81),))
    assert str(info.value) == "Service web does not have a service port 81"
    with pytest.raises(TargetError) as info:
        await svc_resolve(svc, (PortMap(1, "nope"),))
    assert str(info.value) == "Service 'web' does not have a named port 'nope'"


async def test_service_without_selector() -> None:
    client = FakeClient({SVC_PATH: service([{"port": 80}])})
    with pytest.raises(TargetError) as info:
        await resolve(client, Spec("service/web", None, (PortMap(80, 80),)), "ns")
    assert str(info.value) == "invalid service 'web': Service is defined without a selector"
    assert not info.value.retryable
    assert len(client.calls) == 1


# --- UDP guard --------------------------------------------------------------------------------


async def test_udp_only_service_port_is_refused() -> None:
    svc = service(
        [
            {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
            {"name": "both-udp", "port": 5353, "protocol": "UDP"},
            {"name": "both-tcp", "port": 5353, "protocol": "TCP"},
        ],
        selector=SEL,
    )
    for remote in (53, "dns"):
        with pytest.raises(TargetError) as info:
            await svc_resolve(svc, (PortMap(1, remote),))
        assert str(info.value) == f"UDP protocol is not supported for {remote}"
    assert await svc_resolve(svc, (PortMap(1, 5353),)) == ((1, 5353),)


def test_udp_only_pod_port_is_refused() -> None:
    p = pod(
        "web-1",
        ports=[{"name": "dns", "containerPort": 53, "protocol": "UDP"}],
        init_ports=[{"name": "metrics", "containerPort": 9090, "protocol": "UDP"}],
    )
    for remote in (53, "dns"):
        with pytest.raises(TargetError) as info:
            translate_ports([(None, remote)], p)
        assert str(info.value) == f"UDP protocol is not supported for {remote}"
    # only spec.containers count for the guard, as in kubectl
    assert translate_ports([(None, "metrics")], p) == ((9090, 9090),)


# --- pod port names ---------------------------------------------------------------------------


def test_named_pod_ports() -> None:
    p = pod("web-1", init_ports=[{"name": "metrics", "containerPort": 9090}])
    assert translate_ports([PortMap(5000, "http"), (None, "metrics"), (None, 81)], p) == (
        (5000, 8080),
        (9090, 9090),
        (81, 81),
    )
    with pytest.raises(TargetError) as info:
        translate_ports([PortMap(0, "grpc")], p)
    assert str(info.value) == "Pod 'web-1' does not have a named port 'grpc'"
    with pytest.raises(TargetError) as info:
        translate_ports([PortMap(0, "")], p)
    assert str(info.value) == "remote port cannot be empty"
