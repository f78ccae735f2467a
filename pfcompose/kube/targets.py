"""Target resolution: a forward's target → one pod and numeric ports (wire-protocol §10).

kubectl's sequence, with pfcompose's policy on pod choice:

* ``pod/NAME`` — GET the pod; it must be ``Running`` (:class:`PodNotRunning`
  otherwise, which the supervisor retries: the pod may come back).
* ``service/``, ``deployment/``, ``statefulset/``, ``replicaset/`` (also
  ``daemonset/``, ``job/``, ``replicationcontroller/``) and a bare ``selector`` —
  list the pods of the label selector and take a Running **and** Ready pod that is
  not terminating, newest first (:func:`pick_pod`). None → :class:`NoReadyPod`
  (retryable). kubectl instead ranks every pod and may take a Pending one.
* Ports are translated exactly as kubectl does (§10.3), with its error texts.

The pure parts (:func:`pick_pod`, :func:`translate_ports`, :func:`label_selector`)
take plain JSON dicts, so they are tested without any server.

Port input convention. Each port is a ``PortMap`` (anything with ``.local`` and
``.remote``) or a ``(local, remote)`` tuple:

* ``local`` an ``int`` — kept as is (``0`` stays ``0``: a random port);
* ``local`` ``None`` — kubectl's bare form (``http``, ``80``): the local port is the
  remote *as the user wrote it, after name lookup* — the container port for
  pod-like targets, the **service** port for services (``svc/web 80`` → ``80:8080``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from pfcompose.config.target import PodTarget, SelectorTarget, ServiceTarget, Target, WorkloadTarget

__all__ = [
    "NoReadyPod",
    "PodNotRunning",
    "ResolveError",
    "ResolvedTarget",
    "TargetError",
    "is_ready_pod",
    "label_selector",
    "pick_pod",
    "pod_query",
    "resolve",
    "translate_ports",
]

JSON = dict[str, Any]


class ResolveError(Exception):
    """The target cannot be turned into a pod and ports; ``str()`` is one line."""

    retryable = False


class TargetError(ResolveError):
    """Permanent until the cluster objects change: bad port, no selector, unknown kind."""


class PodNotRunning(ResolveError):
    """``pod/NAME`` exists but is not Running yet (kubectl's text)."""

    retryable = True

    def __init__(self, pod: str, phase: str) -> None:
        super().__init__(
            f"unable to forward port because pod is not running. Current status={phase}"
        )
        self.pod = pod
        self.phase = phase


class NoReadyPod(ResolveError):
    """No pod of the selector is Running, Ready and not terminating (yet)."""

    retryable = True


@dataclass(frozen=True)
class ResolvedTarget:
    pod: str
    namespace: str
    ports: tuple[tuple[int, int], ...]
    """``(local, remote)`` pairs; local 0 = random, remote a container port number."""


class _Getter(Protocol):
    async def get(self, path: str, query: Mapping[str, str] | None = None) -> JSON: ...


class _PortMapLike(Protocol):
    @property
    def local(self) -> int | None: ...

    @property
    def remote(self) -> int | str: ...


PortInput = _PortMapLike | tuple[int | None, int | str]


class _SpecLike(Protocol):
    """The fields of ``config.ForwardSpec`` that resolution reads."""

    @property
    def to(self) -> Target: ...

    @property
    def ports(self) -> Sequence[Any]: ...


# kind → (API prefix, resource); services and pods are handled on their own.
_WORKLOADS: dict[str, tuple[str, str]] = {
    "deployment": ("/apis/apps/v1", "deployments"),
    "statefulset": ("/apis/apps/v1", "statefulsets"),
    "replicaset": ("/apis/apps/v1", "replicasets"),
    "daemonset": ("/apis/apps/v1", "daemonsets"),
    "job": ("/apis/batch/v1", "jobs"),
    "replicationcontroller": ("/api/v1", "replicationcontrollers"),
}


async def resolve(client: _Getter, spec: _SpecLike, namespace: str) -> ResolvedTarget:
    """Resolve ``spec`` (``target`` or ``selector``) in ``namespace``.

    Raises :class:`ResolveError` subclasses, and the client's ``KubeApiError``
    (``pods "x" not found``, forbidden…) / ``KubeConnectionError`` unchanged.
    """
    ns = quote(namespace, safe="")
    ports = tuple(spec.ports)
    to = spec.to
    if isinstance(to, SelectorTarget):
        pod = await _ready_pod(client, ns, namespace, to.selector, None)
        return ResolvedTarget(_name(pod), namespace, translate_ports(ports, pod))
    if not to.name:
        raise TargetError(f"invalid target {str(to)!r}: expected TYPE/NAME")
    qname = quote(to.name, safe="")
    if isinstance(to, PodTarget):
        pod = await client.get(f"/api/v1/namespaces/{ns}/pods/{qname}")
        phase = str(_get(pod, "status", "phase") or "Unknown")
        if phase != "Running":
            raise PodNotRunning(to.name, phase)
        return ResolvedTarget(_name(pod), namespace, translate_ports(ports, pod))
    if isinstance(to, ServiceTarget):
        service = await client.get(f"/api/v1/namespaces/{ns}/services/{qname}")
        selector = _service_selector(service, to.name)
        _check_udp_service(ports, service)
        pod = await _ready_pod(client, ns, namespace, selector, str(to))
        return ResolvedTarget(_name(pod), namespace, translate_ports(ports, pod, service))
    prefix, resource = _workload(to)
    obj = await client.get(f"{prefix}/namespaces/{ns}/{resource}/{qname}")
    selector = label_selector(_get(obj, "spec", "selector"))
    pod = await _ready_pod(client, ns, namespace, selector, str(to))
    return ResolvedTarget(_name(pod), namespace, translate_ports(ports, pod))


def _workload(to: WorkloadTarget) -> tuple[str, str]:
    """(API prefix, resource) of a workload kind pods are picked from by its selector."""
    if to.kind not in _WORKLOADS:
        raise TargetError(f"cannot forward to {to}: unsupported target kind {to.kind!r}")
    return _WORKLOADS[to.kind]


async def pod_query(client: _Getter, spec: _SpecLike, namespace: str) -> dict[str, str]:
    """The LIST/WATCH query of the pods that could serve ``spec``.

    ``pod/NAME`` → ``fieldSelector=metadata.name=NAME``; every other target → the
    ``labelSelector`` of its object (service, workload) or of the forward itself.
    The supervisor watches this while it waits for a pod to come (back).
    """
    ns = quote(namespace, safe="")
    to = spec.to
    if isinstance(to, SelectorTarget):
        return {"labelSelector": to.selector}
    if isinstance(to, PodTarget):
        return {"fieldSelector": f"metadata.name={to.name}"}
    qname = quote(to.name, safe="")
    if isinstance(to, ServiceTarget):
        service = await client.get(f"/api/v1/namespaces/{ns}/services/{qname}")
        return {"labelSelector": _service_selector(service, to.name)}
    prefix, resource = _workload(to)
    obj = await client.get(f"{prefix}/namespaces/{ns}/{resource}/{qname}")
    return {"labelSelector": label_selector(_get(obj, "spec", "selector"))}


async def _ready_pod(
    client: _Getter, ns: str, namespace: str, selector: str, target: str | None
) -> JSON:
    pods = await client.get(f"/api/v1/namespaces/{ns}/pods", {"labelSelector": selector})
    items = [p for p in pods.get("items") or [] if isinstance(p, dict)]
    chosen = pick_pod(items)
    if chosen is not None:
        return chosen
    what = f" for {target}" if target else ""
    shown = selector or "<everything>"
    if not items:
        detail = f"no pod matches selector {shown}"
    else:
        n = len(items)
        detail = f"{n} pod{'s' if n != 1 else ''} match selector {shown}, none is running and ready"
    raise NoReadyPod(f"no ready pod{what} in namespace {namespace}: {detail}")


# --- pod choice -----------------------------------------------------------------------


def is_ready_pod(pod: JSON) -> bool:
    """Running, condition Ready=True, and no deletionTimestamp (not terminating)."""
    if _get(pod, "metadata", "deletionTimestamp"):
        return False
    if _get(pod, "status", "phase") != "Running":
        return False
    return _ready_condition(pod) is not None


def pick_pod(pods: Iterable[JSON]) -> JSON | None:
    """The pod to forward to among ``pods``, or ``None`` if none is ready.

    Only :func:`is_ready_pod` pods qualify. Order: newest ``creationTimestamp``
    first (after a rollout that is the new revision); on a tie, the one Ready for
    longer (earlier Ready ``lastTransitionTime``), then fewer container restarts,
    then the smallest name — so the choice is deterministic.
    """
    ready = [p for p in pods if is_ready_pod(p)]
    if not ready:
        return None

    def key(pod: JSON) -> tuple[float, float, int, str]:
        created = _timestamp(_get(pod, "metadata", "creationTimestamp"))
        condition = _ready_condition(pod) or {}
        ready_since = _timestamp(condition.get("lastTransitionTime"), missing=math.inf)
        restarts = sum(
            int(s.get("restartCount") or 0)
            for s in _get(pod, "status", "containerStatuses") or []
            if isinstance(s, dict)
        )
        return (-created, ready_since, restarts, _name(pod))

    return min(ready, key=key)


def _ready_condition(pod: JSON) -> JSON | None:
    for condition in _get(pod, "status", "conditions") or []:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "Ready"
            and condition.get("status") == "True"
        ):
            return condition
    return None


def _timestamp(value: Any, missing: float = -math.inf) -> float:
    if not isinstance(value, str) or not value:
        return missing
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return missing


# --- selectors ------------------------------------------------------------------------


def _service_selector(service: JSON, name: str) -> str:
    selector = _get(service, "spec", "selector") or {}
    if not isinstance(selector, dict) or not selector:
        raise TargetError(f"invalid service '{name}': Service is defined without a selector")
    return ",".join(f"{k}={selector[k]}" for k in sorted(selector))


def label_selector(selector: Any) -> str:
    """A ``metav1.LabelSelector`` dict → its string form (as ``LabelSelectorAsSelector``).

    ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist), sorted
    by key, values sorted. An empty or missing selector selects everything (``""``).
    Plain maps (ReplicationController) are accepted too.
    """
    if not isinstance(selector, dict):
        return ""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return ",".join(f"{k}={selector[k]}" for k in sorted(selector))  # plain map
    parts: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        parts.append((str(key), f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = str(expr.get("key", "")), expr.get("operator")
        values = ",".join(sorted(str(v) for v in expr.get("values") or []))
        if op == "In":
            parts.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            parts.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            parts.append((key, key))
        elif op == "DoesNotExist":
            parts.append((key, f"!{key}"))
        else:
            raise TargetError(f"{op!r} is not a valid label selector operator")
    return ",".join(text for _, text in sorted(parts, key=lambda p: p[0]))


# --- ports (§10.3) --------------------------------------------------------------------


def translate_ports(
    ports: Iterable[PortInput], pod: JSON, service: JSON | None = None
) -> tuple[tuple[int, int], ...]:
    """kubectl's port translation: named pod ports, service port → targetPort.

    See the module docstring for the meaning of ``local`` (``None`` = bare form).
    Raises :class:`TargetError` with kubectl's texts (``Pod 'p' does not have a
    named port 'x'``, ``Service web does not have a service port 81``, ``UDP
    protocol is not supported for 53``).
    """
    pairs = [_pair(p) for p in ports]
    if service is None:
        _check_udp(pairs, pod, _pod_ports(pod), lambda name: _pod_port_by_name(pod, name))
        return tuple(_translate_pod_port(local, remote, pod) for local, remote in pairs)
    _check_udp_service(pairs, service)
    return tuple(_translate_service_port(local, remote, service, pod) for local, remote in pairs)


def _pair(port: PortInput) -> tuple[int | None, int | str]:
    if isinstance(port, tuple):
        local, remote = port
    else:
        local, remote = port.local, port.remote
    return local, remote


def _translate_pod_port(local: int | None, remote: int | str, pod: JSON) -> tuple[int, int]:
    number = _pod_port_by_name(pod, remote) if isinstance(remote, str) else remote
    return (number if local is None else local, number)


def _translate_service_port(
    local: int | None, remote: int | str, service: JSON, pod: JSON
) -> tuple[int, int]:
    number = _service_port_by_name(service, remote) if isinstance(remote, str) else remote
    container_port = _container_port_by_service_port(service, pod, number)
    return (number if local is None else local, container_port)


def _pod_port_by_name(pod: JSON, name: str) -> int:
    """``LookupContainerPortNumberByName``: containers, then initContainers (sidecars)."""
    if name == "":
        raise TargetError("remote port cannot be empty")
    if name.isdigit():
        return int(name)
    for section in ("containers", "initContainers"):
        for container in _get(pod, "spec", section) or []:
            for port in container.get("ports") or []:
                if port.get("name") == name:
                    return int(port["containerPort"])
    raise TargetError(f"Pod '{_name(pod)}' does not have a named port '{name}'")


def _service_port_by_name(service: JSON, name: str) -> int:
    if name == "":
        raise TargetError("remote port cannot be empty")
    if name.isdigit():
        return int(name)
    for port in _get(service, "spec", "ports") or []:
        if port.get("name") == name:
            return int(port["port"])
    raise TargetError(f"Service '{_name(service)}' does not have a named port '{name}'")


def _container_port_by_service_port(service: JSON, pod: JSON, number: int) -> int:
    """``LookupContainerPortNumberByServicePort`` (headless: the port itself)."""
    for port in _get(service, "spec", "ports") or []:
        if port.get("port") != number:
            continue
        if _get(service, "spec", "clusterIP") == "None":
            return number
        target = port.get("targetPort")
        if target is None or isinstance(target, int):
            return int(target) if target else number
        return _pod_port_by_name(pod, str(target))
    raise TargetError(f"Service {_name(service)} does not have a service port {number}")


def _pod_ports(pod: JSON) -> list[JSON]:
    """Only ``spec.containers`` count for the UDP guard, as in kubectl."""
    return [
        {"port": p.get("containerPort"), "protocol": p.get("protocol") or "TCP"}
        for c in _get(pod, "spec", "containers") or []
        for p in c.get("ports") or []
    ]


def _check_udp_service(ports: Iterable[Any], service: JSON) -> None:
    pairs = [_pair(p) for p in ports]
    declared = [
        {"port": p.get("port"), "protocol": p.get("protocol") or "TCP"}
        for p in _get(service, "spec", "ports") or []
    ]
    _check_udp(pairs, service, declared, lambda name: _service_port_by_name(service, name))


def _check_udp(
    pairs: Iterable[tuple[int | None, int | str]],
    obj: JSON,
    declared: list[JSON],
    by_name: Any,
) -> None:
    """Refuse a remote port declared only as UDP (kubernetes#47862)."""
    udp = {p["port"] for p in declared if p["protocol"] == "UDP"}
    tcp = {p["port"] for p in declared if p["protocol"] == "TCP"}
    udp_only = udp - tcp
    for _, remote in pairs:
        number = by_name(remote) if isinstance(remote, str) else remote
        if number in udp_only:
            raise TargetError(f"UDP protocol is not supported for {remote}")


# --- JSON helpers ---------------------------------------------------------------------


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _name(obj: JSON) -> str:
    return str(_get(obj, "metadata", "name") or "")
