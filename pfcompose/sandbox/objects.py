"""Kubernetes JSON for the sandbox's objects, shaped as kubectl decodes them (§10.2).

Every object carries ``apiVersion`` and ``kind``: kubectl's resource builder decodes
by them. Errors are ``Status`` objects with the API server's exact messages, which
kubectl prints as ``Error from server (NotFound): pods "x" not found``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pfcompose.sandbox.state import Pod, Service, Workload

__all__ = [
    "namespace_json",
    "namespace_list_json",
    "pod_json",
    "pod_list_json",
    "service_json",
    "service_list_json",
    "status_json",
    "workload_json",
    "workload_list_json",
]

_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "replicaset": "ReplicaSet"}


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_ports(pod_ports: Iterable[Any], container: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in pod_ports:
        if p.container != container:
            continue
        entry: dict[str, Any] = {"containerPort": p.container_port, "protocol": p.protocol}
        if p.name:
            entry = {"name": p.name, **entry}
        out.append(entry)
    return out


def _containers(ports: list[Any]) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(p.container for p in ports)) or ["app"]
    return [
        {
            "name": name,
            "image": "pfcompose/sandbox:latest",
            "ports": _container_ports(ports, name),
        }
        for name in names
    ]


def pod_json(pod: Pod) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.uid,
        "resourceVersion": str(pod.resource_version),
        "creationTimestamp": _ts(pod.created),
        "labels": dict(pod.labels),
    }
    if pod.deletion_timestamp is not None:
        metadata["deletionTimestamp"] = _ts(pod.deletion_timestamp)
        metadata["deletionGracePeriodSeconds"] = 30
    if pod.owner is not None:
        kind, name = pod.owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": name,
                "uid": f"{pod.uid[:-12]}000000000000",
                "controller": True,
            }
        ]
    ready = "True" if pod.ready and pod.phase == "Running" else "False"
    running = pod.phase == "Running"
    containers = _containers(pod.ports)
    spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Always"}
    if pod.node_name:
        spec["nodeName"] = pod.node_name
    status: dict[str, Any] = {
        "phase": pod.phase,
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "True" if pod.node_name else "False",
                "lastTransitionTime": _ts(pod.created),
            },
            {"type": "Initialized", "status": "True", "lastTransitionTime": _ts(pod.created)},
            {
                "type": "ContainersReady",
                "status": ready,
                "lastTransitionTime": _ts(pod.ready_since),
            },
            {"type": "Ready", "status": ready, "lastTransitionTime": _ts(pod.ready_since)},
        ],
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": _ts(pod.created),
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": ready == "True",
                "started": running,
                "restartCount": pod.restarts,
                "state": {"running": {"startedAt": _ts(pod.created)}}
                if running
                else {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in containers
        ],
    }
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}


def _list(kind: str, api_version: str, rv: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


def pod_list_json(pods: Iterable[Pod], rv: int) -> dict[str, Any]:
    return _list("PodList", "v1", rv, [pod_json(p) for p in sorted(pods, key=_order)])


def _order(pod: Pod) -> tuple[str, str]:
    return (pod.namespace, pod.name)


def service_json(svc: Service) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    for p in svc.ports:
        entry: dict[str, Any] = {
            "protocol": p.protocol,
            "port": p.port,
            "targetPort": p.target_port if p.target_port else p.port,
        }
        if p.name:
            entry = {"name": p.name, **entry}
        ports.append(entry)
    spec: dict[str, Any] = {
        "ports": ports,
        "clusterIP": svc.cluster_ip,
        "clusterIPs": [svc.cluster_ip],
        "type": "ClusterIP",
        "sessionAffinity": "None",
    }
    if svc.selector:
        spec["selector"] = dict(svc.selector)
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": svc.name,
            "namespace": svc.namespace,
            "uid": svc.uid,
            "resourceVersion": str(svc.resource_version),
            "creationTimestamp": _ts(svc.created),
            "labels": dict(svc.labels),
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def service_list_json(services: Iterable[Service], rv: int) -> dict[str, Any]:
    return _list(
        "ServiceList",
        "v1",
        rv,
        [service_json(s) for s in sorted(services, key=lambda s: (s.namespace, s.name))],
    )


def workload_json(wl: Workload, live_pods: int) -> dict[str, Any]:
    kind = _KINDS[wl.kind]
    template = {
        "metadata": {"labels": dict(wl.template_labels)},
        "spec": {"containers": _containers(wl.template_ports)},
    }
    spec: dict[str, Any] = {"replicas": wl.replicas, "selector": wl.selector, "template": template}
    if wl.kind == "statefulset":
        spec["serviceName"] = wl.name
    status: dict[str, Any] = {
        "replicas": live_pods,
        "readyReplicas": live_pods,
        "availableReplicas": live_pods,
        "observedGeneration": 1,
    }
    if wl.kind == "deployment":
        status["updatedReplicas"] = live_pods
        # what `kubectl wait --for=condition=Available deploy/NAME` waits for
        available = live_pods >= wl.replicas
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "lastUpdateTime": _ts(wl.created),
                "lastTransitionTime": _ts(wl.created),
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": _ts(wl.created),
                "lastTransitionTime": _ts(wl.created),
                "reason": "NewReplicaSetAvailable",
                "message": f'Deployment "{wl.name}" has successfully progressed.',
            },
        ]
    return {
        "kind": kind,
        "apiVersion": "apps/v1",
        "metadata": {
            "name": wl.name,
            "namespace": wl.namespace,
            "uid": wl.uid,
            "resourceVersion": str(wl.resource_version),
            "generation": 1,
            "creationTimestamp": _ts(wl.created),
            "labels": dict(wl.labels),
        },
        "spec": spec,
        "status": status,
    }


def workload_list_json(kind: str, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    return _list(_KINDS[kind] + "List", "apps/v1", rv, items)


def namespace_json(name: str, created: datetime) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": f"ns-{name}",
            "resourceVersion": "1",
            "creationTimestamp": _ts(created),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def namespace_list_json(namespaces: dict[str, datetime], rv: int) -> dict[str, Any]:
    return _list(
        "NamespaceList", "v1", rv, [namespace_json(n, t) for n, t in sorted(namespaces.items())]
    )


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    500: "InternalError",
}


def status_json(
    code: int,
    message: str,
    *,
    reason: str | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """A ``Status`` failure: ``status_json(404, 'pods "x" not found', name="x", kind="pods")``."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
    }
    if name is not None or kind is not None:
        out["details"] = {k: v for k, v in (("name", name), ("kind", kind)) if v is not None}
    out["code"] = code
    return out


def not_found(resource: str, name: str) -> dict[str, Any]:
    """``pods "x" not found`` — the group-qualified resource for apps (``deployments.apps``)."""
    return status_json(
        404, f'{resource} "{name}" not found', name=name, kind=resource.split(".")[0]
    )


# -- server-side printing (kubectl get asks for meta.k8s.io/v1 Table) ---------------------


def human_duration(seconds: float) -> str:
    """apimachinery ``duration.HumanDuration``: kubectl's AGE column."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    years, days = divmod(h // 24, 365)
    if years < 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def _column(name: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "format": "name" if name == "Name" else "",
        "description": "",
        "priority": 0,
    }


def table_json(objs: list[dict[str, Any]], rv: int, now: datetime) -> dict[str, Any]:
    """A ``Table`` of already rendered objects of one kind (pods, services, workloads…)."""
    kind = objs[0]["kind"] if objs else "Pod"

    def age(o: dict[str, Any]) -> str:
        created = datetime.fromisoformat(o["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        return human_duration((now - created).total_seconds())

    if kind == "Pod":
        columns = [
            _column("Name"),
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "string"),
            _column("Age"),
        ]

        def cells(o: dict[str, Any]) -> list[Any]:
            statuses = o["status"]["containerStatuses"]
            ready = sum(1 for c in statuses if c["ready"])
            status = "Terminating" if "deletionTimestamp" in o["metadata"] else o["status"]["phase"]
            restarts = sum(c["restartCount"] for c in statuses)
            return [
                o["metadata"]["name"],
                f"{ready}/{len(statuses)}",
                status,
                str(restarts),
                age(o),
            ]
    elif kind == "Service":
        columns = [
            _column("Name"),
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            _column("Age"),
        ]

        def cells(o: dict[str, Any]) -> list[Any]:
            ports = ",".join(f"{p['port']}/{p['protocol']}" for p in o["spec"]["ports"])
            return [
                o["metadata"]["name"],
                o["spec"]["type"],
                o["spec"]["clusterIP"],
                "<none>",
                ports or "<none>",
                age(o),
            ]
    elif kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        columns = [_column("Name"), _column("Ready"), _column("Age")]

        def cells(o: dict[str, Any]) -> list[Any]:
            st = o["status"]
            return [o["metadata"]["name"], f"{st['readyReplicas']}/{o['spec']['replicas']}", age(o)]
    else:
        columns = [_column("Name"), _column("Status"), _column("Age")]

        def cells(o: dict[str, Any]) -> list[Any]:
            return [o["metadata"]["name"], o.get("status", {}).get("phase", ""), age(o)]

    rows = [
        {
            "cells": cells(o),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in objs
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": columns,
        "rows": rows,
    }
