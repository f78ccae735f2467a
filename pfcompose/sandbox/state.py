"""The emulated cluster's objects: what the API server shows and the kubelet serves.

Plain data plus one resourceVersion counter and a bounded event log, so LIST,
GET and WATCH (including "watch from the list's resourceVersion") agree the way
a real API server's do. Nothing here does I/O except reading a state file; the
pods' processes live in ``backends.py`` and follow these objects.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import trio
import yaml

from pfcompose.config.selector import Requirement, matches, parse_selector
from pfcompose.config.target import SelectorTarget
from pfcompose.sandbox.rbac import Rbac, RbacError

__all__ = [
    "Behaviour",
    "ContainerPort",
    "Pod",
    "Service",
    "ServicePort",
    "State",
    "StateError",
    "WatchEvent",
    "Workload",
    "state_from_plan",
]

WORKLOAD_KINDS = ("deployment", "statefulset", "replicaset")
EPOCH = datetime.now(UTC).replace(microsecond=0)
"""Default creation time of objects: when the sandbox module was loaded."""


class StateError(ValueError):
    """The state file is wrong; ``str()`` is one line naming the place."""


@dataclass(frozen=True)
class Behaviour:
    """What answers on a pod port: ``echo``, ``http``, ``blob``, ``target`` or ``none``."""

    kind: Literal["echo", "http", "blob", "target", "none"]
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, value: object, where: str) -> Behaviour:
        if value is None:
            return cls("http")
        if isinstance(value, str):
            if value in ("echo", "http", "blob", "none"):
                return cls(value)  # type: ignore[arg-type]
            raise StateError(
                f"{where}: unknown behaviour {value!r} (echo, http, blob, none, "
                "or {target: HOST:PORT})"
            )
        if isinstance(value, Mapping) and "target" in value:
            host, _, port = str(value["target"]).rpartition(":")
            if not host or not port.isdigit():
                raise StateError(f"{where}: target must be HOST:PORT, got {value['target']!r}")
            return cls("target", host.strip("[]"), int(port))
        raise StateError(f"{where}: unknown behaviour {value!r}")

    def to_yaml(self) -> object:
        return {"target": f"{self.host}:{self.port}"} if self.kind == "target" else self.kind


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"
    serve: Behaviour = Behaviour("http")
    container: str = "app"


@dataclass
class Pod:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[ContainerPort] = field(default_factory=list)
    phase: str = "Running"
    ready: bool = True
    node_name: str | None = "sandbox-node"
    created: datetime = EPOCH
    ready_since: datetime = EPOCH
    deletion_timestamp: datetime | None = None
    restarts: int = 0
    uid: str = ""
    resource_version: int = 0
    owner: tuple[str, str] | None = None  # (kind, name), e.g. ("ReplicaSet", "web-5f7c9")

    def __post_init__(self) -> None:
        if not self.uid:
            self.uid = _uid("pod", self.namespace, self.name)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def sandbox_id(self) -> str:
        """The CRI sandbox ID the kubelet names in its error texts (64 hex chars)."""
        return hashlib.sha256(f"sandbox/{self.uid}".encode()).hexdigest()

    def port(self, number: int) -> ContainerPort | None:
        for p in self.ports:
            if p.container_port == number and p.protocol == "TCP":
                return p
        return None


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str | None = None
    name: str | None = None
    protocol: str = "TCP"


@dataclass
class Service:
    name: str
    namespace: str = "default"
    selector: dict[str, str] = field(default_factory=dict)
    ports: list[ServicePort] = field(default_factory=list)
    cluster_ip: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime = EPOCH
    uid: str = ""
    resource_version: int = 0

    def __post_init__(self) -> None:
        if not self.uid:
            self.uid = _uid("service", self.namespace, self.name)


@dataclass
class Workload:
    """A Deployment, StatefulSet or ReplicaSet: a selector plus, maybe, a pod template."""

    kind: Literal["deployment", "statefulset", "replicaset"]
    name: str
    namespace: str = "default"
    selector: dict[str, Any] = field(default_factory=dict)  # a LabelSelector object
    replicas: int = 0
    template_labels: dict[str, str] = field(default_factory=dict)
    template_ports: list[ContainerPort] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime = EPOCH
    uid: str = ""
    resource_version: int = 0

    def __post_init__(self) -> None:
        if not self.uid:
            self.uid = _uid(self.kind, self.namespace, self.name)

    @property
    def selector_string(self) -> str:
        return selector_from_object(self.selector)


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    pod: Pod  # a snapshot: later changes never alter a queued event
    resource_version: int


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "pfcompose-sandbox/" + "/".join(parts)))


def _suffix(seed: str, n: int = 5) -> str:
    """Kubernetes-looking random suffix (consonants + digits), deterministic per seed."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:n])


class Watcher:
    """One WATCH: a filter plus a bounded channel the state publishes into."""

    def __init__(self, namespace: str | None, selector: Sequence[Requirement]) -> None:
        self.namespace = namespace
        self.selector = selector
        self.send, self.receive = trio.open_memory_channel[WatchEvent](1024)

    def wants(self, pod: Pod) -> bool:
        return (self.namespace is None or pod.namespace == self.namespace) and matches(
            self.selector, pod.labels
        )


class State:
    """Every object of the emulated cluster, with one resourceVersion sequence."""

    def __init__(self) -> None:
        self.namespaces: dict[str, datetime] = {"default": EPOCH, "kube-system": EPOCH}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.workloads: dict[tuple[str, str, str], Workload] = {}
        self.resource_version = 1
        self._log: deque[WatchEvent] = deque(maxlen=4096)
        self._watchers: set[Watcher] = set()
        self._pod_counter = 0
        self.rbac = Rbac()
        """Users and rules (the state file's ``users:``/``rbac:``); off unless given."""

    # -- versions and events ------------------------------------------------
    def _bump(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _publish(self, kind: Literal["ADDED", "MODIFIED", "DELETED"], pod: Pod) -> None:
        event = WatchEvent(kind, copy.deepcopy(pod), pod.resource_version)
        self._log.append(event)
        for w in list(self._watchers):
            if w.wants(pod):
                try:
                    w.send.send_nowait(event)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    # A watcher that cannot keep up is ended, as the API server does.
                    w.send.close()
                    self._watchers.discard(w)

    def watch(self, namespace: str | None, selector: str, since: int | None) -> Watcher:
        """Register a watcher; replay logged events newer than ``since``.

        ``since`` None/0 means "from now", preceded by ADDED for every current
        match (the API server's behaviour without a resourceVersion).
        """
        w = Watcher(namespace, parse_selector(selector))
        if not since:
            for pod in self.list_pods(namespace, selector):
                w.send.send_nowait(WatchEvent("ADDED", copy.deepcopy(pod), pod.resource_version))
        else:
            for event in self._log:
                if event.resource_version > since and w.wants(event.pod):
                    w.send.send_nowait(event)
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)
        w.send.close()

    def close_watchers(self) -> None:
        for w in list(self._watchers):
            self.unwatch(w)

    # -- queries --------------------------------------------------------------
    def list_pods(self, namespace: str | None, selector: str = "") -> list[Pod]:
        reqs = parse_selector(selector)
        return [
            p
            for p in self.pods.values()
            if (namespace is None or p.namespace == namespace) and matches(reqs, p.labels)
        ]

    def workload(self, kind: str, namespace: str, name: str) -> Workload | None:
        return self.workloads.get((kind, namespace, name))

    # -- mutations ----------------------------------------------------------
    def add_namespace(self, name: str) -> None:
        self.namespaces.setdefault(name, EPOCH)

    def add_pod(self, pod: Pod) -> Pod:
        if pod.key in self.pods:
            raise StateError(f'pods "{pod.name}" already exists in namespace {pod.namespace}')
        self.add_namespace(pod.namespace)
        pod.resource_version = self._bump()
        self.pods[pod.key] = pod
        self._publish("ADDED", pod)
        return pod

    def update_pod(self, pod: Pod) -> None:
        pod.resource_version = self._bump()
        self._publish("MODIFIED", pod)

    def delete_pod(self, namespace: str, name: str) -> Pod:
        pod = self.pods.pop((namespace, name))
        pod.resource_version = self._bump()
        self._publish("DELETED", pod)
        return pod

    def add_service(self, svc: Service) -> None:
        self.add_namespace(svc.namespace)
        svc.resource_version = self._bump()
        if not svc.cluster_ip:
            n = len(self.services) + 10
            svc.cluster_ip = f"10.96.{n // 250}.{n % 250 + 1}"
        self.services[(svc.namespace, svc.name)] = svc

    def add_workload(self, wl: Workload) -> list[Pod]:
        """Store a workload and create its ``replicas`` pods from the template."""
        self.add_namespace(wl.namespace)
        wl.resource_version = self._bump()
        self.workloads[(wl.kind, wl.namespace, wl.name)] = wl
        return [self.add_pod(self.new_workload_pod(wl, i)) for i in range(wl.replicas)]

    def new_workload_pod(self, wl: Workload, index: int | None = None) -> Pod:
        """A pod as the workload's controller would name it (``web-5f7c9d8b6-x2kqz``)."""
        self._pod_counter += 1
        labels = dict(wl.template_labels)
        if wl.kind == "statefulset":
            i = index if index is not None else self._pod_counter
            name = f"{wl.name}-{i}"
            owner = ("StatefulSet", wl.name)
        elif wl.kind == "deployment":
            template_hash = hashlib.sha256(wl.name.encode()).hexdigest()[:9].replace("0", "5")
            labels.setdefault("pod-template-hash", template_hash)
            name = f"{wl.name}-{template_hash}-{_suffix(f'{wl.name}/{self._pod_counter}')}"
            owner = ("ReplicaSet", f"{wl.name}-{template_hash}")
        else:
            name = f"{wl.name}-{_suffix(f'{wl.name}/{self._pod_counter}')}"
            owner = ("ReplicaSet", wl.name)
        return Pod(name, wl.namespace, labels, list(wl.template_ports), owner=owner)

    def replacement_for(self, pod: Pod) -> Pod:
        """The pod a rollout creates in place of ``pod``: new name, same labels and ports."""
        self._pod_counter += 1
        stem = pod.name.rsplit("-", 1)[0] if "-" in pod.name else pod.name
        name = f"{stem}-{_suffix(f'{pod.name}/replacement/{self._pod_counter}')}"
        while (pod.namespace, name) in self.pods:
            self._pod_counter += 1
            name = f"{stem}-{_suffix(f'{pod.name}/replacement/{self._pod_counter}')}"
        return Pod(
            name,
            pod.namespace,
            dict(pod.labels),
            list(pod.ports),
            owner=pod.owner,
            created=datetime.now(UTC).replace(microsecond=0),
            ready_since=datetime.now(UTC).replace(microsecond=0),
        )

    # -- loading ------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> State:
        """Read a state YAML file (format: docs/sandbox.md)."""
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StateError(f"{path}: {exc}".replace("\n", " ")) from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<state>") -> State:
        if not isinstance(data, Mapping):
            raise StateError(f"{source}: the top level must be a mapping")
        state = cls()
        known = {
            "namespaces",
            "pods",
            "services",
            "deployments",
            "statefulsets",
            "replicasets",
            "users",
            "rbac",
        }
        for key in data:
            if key not in known:
                raise StateError(
                    f"{source}: unknown key {key!r} (expected one of {', '.join(sorted(known))})"
                )
        if "users" in data or "rbac" in data:
            try:
                state.rbac.set(data.get("users"), data.get("rbac"), source)
            except RbacError as exc:
                raise StateError(str(exc)) from None
        for ns in data.get("namespaces") or []:
            state.add_namespace(str(ns))
        for i, raw in enumerate(data.get("pods") or []):
            state.add_pod(_pod(raw, f"{source}: pods[{i}]"))
        for i, raw in enumerate(data.get("services") or []):
            state.add_service(_service(raw, f"{source}: services[{i}]"))
        for kind in WORKLOAD_KINDS:
            for i, raw in enumerate(data.get(kind + "s") or []):
                state.add_workload(_workload(kind, raw, f"{source}: {kind}s[{i}]"))
        return state


def selector_from_object(selector: Mapping[str, object]) -> str:
    """A ``LabelSelector`` object (matchLabels/matchExpressions) as a selector string."""
    parts: list[str] = []
    match_labels = selector.get("matchLabels")
    if isinstance(match_labels, Mapping):
        parts += [f"{k}={v}" for k, v in sorted(match_labels.items())]
    exprs = selector.get("matchExpressions")
    if isinstance(exprs, list):
        for e in exprs:
            key, op = str(e["key"]), str(e["operator"])
            vals = ",".join(str(v) for v in e.get("values") or [])
            if op == "In":
                parts.append(f"{key} in ({vals})")
            elif op == "NotIn":
                parts.append(f"{key} notin ({vals})")
            elif op == "Exists":
                parts.append(key)
            elif op == "DoesNotExist":
                parts.append(f"!{key}")
            else:
                raise StateError(f"{op!r} is not a valid label selector operator")
    return ",".join(parts)


# -- YAML → objects ---------------------------------------------------------


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise StateError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _name(raw: Mapping[str, Any], where: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise StateError(f"{where}: name is required")
    return name


def _labels(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    return {str(k): str(v) for k, v in _mapping(value, where).items()}


def _time(value: object, where: str) -> datetime:
    if value is None:
        return EPOCH
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise StateError(f"{where}: not an RFC 3339 time: {value!r}") from exc


def _ports(raw: Mapping[str, Any], where: str) -> list[ContainerPort]:
    """``containers: [{name, ports: [...]}]`` or the one-container shorthand ``ports:``."""
    containers = raw.get("containers")
    if containers is None:
        containers = [{"name": "app", "ports": raw.get("ports") or []}]
    out: list[ContainerPort] = []
    for ci, c in enumerate(containers):
        c = _mapping(c, f"{where}.containers[{ci}]")
        cname = str(c.get("name") or "app")
        for pi, p in enumerate(c.get("ports") or []):
            pw = f"{where}.containers[{ci}].ports[{pi}]"
            if isinstance(p, int):
                p = {"containerPort": p}
            p = _mapping(p, pw)
            number = p.get("containerPort")
            if not isinstance(number, int) or not 0 < number < 65536:
                raise StateError(f"{pw}: containerPort must be 1-65535")
            out.append(
                ContainerPort(
                    number,
                    str(p["name"]) if p.get("name") else None,
                    str(p.get("protocol") or "TCP").upper(),
                    Behaviour.parse(p.get("serve"), pw + ".serve"),
                    cname,
                )
            )
    return out


def _pod(raw: object, where: str) -> Pod:
    m = _mapping(raw, where)
    created = _time(m.get("creationTimestamp"), where + ".creationTimestamp")
    deletion = m.get("deletionTimestamp")
    return Pod(
        name=_name(m, where),
        namespace=str(m.get("namespace") or "default"),
        labels=_labels(m.get("labels"), where + ".labels"),
        ports=_ports(m, where),
        phase=str(m.get("phase") or "Running"),
        ready=bool(m.get("ready", True)),
        node_name=None
        if "nodeName" in m and m["nodeName"] is None
        else str(m.get("nodeName") or "sandbox-node"),
        created=created,
        ready_since=created,
        deletion_timestamp=None if deletion is None else _time(deletion, where),
        restarts=int(m.get("restarts") or 0),
    )


def _service(raw: object, where: str) -> Service:
    m = _mapping(raw, where)
    ports: list[ServicePort] = []
    for i, p in enumerate(m.get("ports") or []):
        p = _mapping(p, f"{where}.ports[{i}]")
        tp = p.get("targetPort")
        ports.append(
            ServicePort(
                int(p["port"]),
                tp if isinstance(tp, int) or tp is None else str(tp),
                str(p["name"]) if p.get("name") else None,
                str(p.get("protocol") or "TCP").upper(),
            )
        )
    return Service(
        name=_name(m, where),
        namespace=str(m.get("namespace") or "default"),
        selector=_labels(m.get("selector"), where + ".selector"),
        ports=ports,
        cluster_ip=str(m.get("clusterIP") or ""),
        labels=_labels(m.get("labels"), where + ".labels"),
    )


def _workload(kind: str, raw: object, where: str) -> Workload:
    m = _mapping(raw, where)
    selector = m.get("selector") or {}
    selector = _mapping(selector, where + ".selector")
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": _labels(selector, where + ".selector")}
    template = _mapping(m.get("template") or {}, where + ".template")
    template_labels = _labels(template.get("labels"), where + ".template.labels")
    if not template_labels:
        template_labels = dict(selector.get("matchLabels") or {})
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        if not template_labels:
            raise StateError(f"{where}: selector (or template.labels) is required")
        selector = {"matchLabels": dict(template_labels)}
    return Workload(
        kind=kind,  # type: ignore[arg-type]
        name=_name(m, where),
        namespace=str(m.get("namespace") or "default"),
        selector=dict(selector),
        replicas=int(m.get("replicas", 1 if template else 0)),
        template_labels=template_labels,
        template_ports=_ports(template, where + ".template"),
        labels=_labels(m.get("labels"), where + ".labels"),
    )


# -- forwards.yaml → objects --------------------------------------------------


def state_from_plan(forwards: Iterable[Any], *, default_namespace: str = "default") -> State:
    """Synthesise objects that satisfy every forward of a plan (``--from``).

    Each target gets an object of its kind with one Running, Ready pod behind it
    (selectors get a pod carrying exactly the labels they ask for); every remote
    port, numbered or named, is served by ``http`` on that pod.
    """
    state = State()
    for spec in forwards:
        ns = spec.namespace or default_namespace
        remote: list[int | str] = [p.remote for p in spec.ports]
        name = spec.name
        if isinstance(spec.to, SelectorTarget):
            kind, obj = "selector", name
            labels = _labels_for(spec.to.selector)
        else:
            kind, obj = spec.to.kind, spec.to.name
            labels = {"app.kubernetes.io/name": obj}
        ports = _synth_ports(remote)
        if kind == "pod":
            if (ns, obj) not in state.pods:
                state.add_pod(Pod(obj, ns, labels, ports))
            else:
                _merge_ports(state.pods[(ns, obj)], ports)
            continue
        if kind == "service":
            svc_ports = [
                ServicePort(
                    p if isinstance(p, int) else 10000 + i, p, p if isinstance(p, str) else f"p{p}"
                )
                for i, p in enumerate(remote)
            ]
            existing = state.services.get((ns, obj))
            pod_name = f"{obj}-{_suffix(ns + '/' + obj)}"
            if existing is None:
                state.add_service(Service(obj, ns, dict(labels), svc_ports))
                state.add_pod(Pod(pod_name, ns, labels, ports))
            else:
                have = {(sp.port, sp.name) for sp in existing.ports}
                existing.ports.extend(sp for sp in svc_ports if (sp.port, sp.name) not in have)
                _merge_ports(state.pods[(ns, pod_name)], ports)
            continue
        if kind in WORKLOAD_KINDS:
            if (kind, ns, obj) not in state.workloads:
                state.add_workload(
                    Workload(
                        kind,  # type: ignore[arg-type]
                        obj,
                        ns,
                        {"matchLabels": labels},
                        1,
                        dict(labels),
                        ports,
                    )
                )
            continue
        # a bare selector: one pod carrying the labels it asks for
        pod_name = f"{name}-{_suffix(ns + '/' + (spec.selector or ''))}"
        if (ns, pod_name) not in state.pods:
            state.add_pod(Pod(pod_name, ns, labels, ports))
    return state


def _synth_ports(remote: Sequence[int | str]) -> list[ContainerPort]:
    """Container ports for the remote ports: numbers as is, names on 8000+i."""
    out: list[ContainerPort] = []
    used = {p for p in remote if isinstance(p, int)}
    for i, p in enumerate(remote):
        if isinstance(p, int):
            out.append(ContainerPort(p, None))
        else:
            number = 8000 + i
            while number in used:
                number += 1
            used.add(number)
            out.append(ContainerPort(number, p))
    return out


def _merge_ports(pod: Pod, ports: list[ContainerPort]) -> None:
    have = {(p.container_port, p.name) for p in pod.ports}
    pod.ports.extend(p for p in ports if (p.container_port, p.name) not in have)


def _labels_for(selector: str) -> dict[str, str]:
    """Labels that satisfy a selector: ``=``/``in`` pick a value, ``exists`` gets one."""
    labels: dict[str, str] = {}
    for r in parse_selector(selector):
        if r.op in ("=", "in"):
            labels[r.key] = r.values[0]
        elif r.op == "exists":
            labels[r.key] = "true"
        elif r.op == "notin":
            labels.setdefault(r.key, "sandbox-" + "-".join(r.values))
        elif r.op == "gt":
            labels[r.key] = str(int(r.values[0]) + 1)
        elif r.op == "lt":
            labels[r.key] = str(int(r.values[0]) - 1)
    return labels


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def state_from_forwards_file(path: Path) -> State:
    """``--from``: every forward of ``path``, profiles or not, as sandbox objects.

    Raises ``pfcompose.config.ConfigErrors`` when the file is invalid.
    """
    from pfcompose.config import load_plan

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    forwards = raw.get("forwards") if isinstance(raw, Mapping) else None
    names = [str(n) for n in forwards] if isinstance(forwards, Mapping) else []
    plan = load_plan([path], selected=names)
    return state_from_plan(plan.forwards.values())
