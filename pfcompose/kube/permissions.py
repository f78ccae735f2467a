"""Permissions: what RBAC must allow a forward, asked before dialing, and said plainly on a 403.

``pfcompose check`` (and ``up --check``) asks the API server, with one
SelfSubjectAccessReview per rule, whether the kubeconfig's user may do what each
forward will do: read its target (``get`` the pod, service or workload; ``list``
and ``watch`` pods, which the forward does to find the pod and wait for it) and
open the port-forward, whose verb depends on the transport and the server:

* SPDY is a POST: ``create pods/portforward``.
* A WebSocket upgrade is a GET: ``get pods/portforward``; from 1.35 the API server
  also requires ``create`` (KEP-4006, AuthorizePodWebsocketUpgradeCreatePermission).
* ``auto`` works with ``create`` alone (its SPDY fallback) or with the WebSocket verbs.

During ``up`` a 403 becomes :func:`forbidden_line` (the missing rule, not the Status
text), and the ``websocket`` transport probes one upgrade (:func:`probe_portforward`)
before it says ready, since it has no session whose upgrade would have been refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import trio

from pfcompose.config.spec import ForwardSpec
from pfcompose.config.target import PodTarget, ServiceTarget, WorkloadTarget
from pfcompose.kube.client import KubeApiError, KubeClient
from pfcompose.wire.dial import dial_channel
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.errors import UpgradeError

__all__ = [
    "ForwardCheck",
    "Need",
    "check_forward",
    "forbidden_line",
    "needs",
    "probe_portforward",
    "server_version",
]

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

_WORKLOAD_RESOURCES = {
    "deployment": "deployments",
    "statefulset": "statefulsets",
    "replicaset": "replicasets",
}


@dataclass(frozen=True)
class Need:
    """One rule a forward needs: ``create pods/portforward in namespace shop``."""

    verb: str
    resource: str
    namespace: str
    subresource: str = ""
    group: str = ""
    name: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            what += "/" + self.subresource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {what} {where}"

    def review(self) -> dict[str, Any]:
        attrs = {
            "namespace": self.namespace,
            "verb": self.verb,
            "group": self.group,
            "resource": self.resource,
            "subresource": self.subresource,
            "name": self.name,
        }
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {k: v for k, v in attrs.items() if v}},
        }


def websocket_needs_create(version: tuple[int, int] | None) -> bool:
    """From 1.35 a WebSocket port-forward needs ``create`` too; unknown → assume it does."""
    return version is None or version >= (1, 35)


def needs(
    spec: ForwardSpec, namespace: str, version: tuple[int, int] | None
) -> tuple[list[Need], list[list[Need]]]:
    """(rules every one of which is needed, alternatives of which one set must be allowed).

    The alternatives are the port-forward verbs: ``auto`` is satisfied by either its
    WebSocket verbs or SPDY's ``create``; the other transports have one set.
    """
    ns = namespace
    required: list[Need] = []
    to = spec.to
    pod_name = ""
    if isinstance(to, PodTarget):
        pod_name = to.name
        required.append(Need("get", "pods", ns, name=to.name))
    elif isinstance(to, ServiceTarget):
        required.append(Need("get", "services", ns, name=to.name))
        required.append(Need("list", "pods", ns))
    elif isinstance(to, WorkloadTarget) and to.kind in _WORKLOAD_RESOURCES:
        resource = _WORKLOAD_RESOURCES[to.kind]
        required.append(Need("get", resource, ns, group="apps", name=to.name))
        required.append(Need("list", "pods", ns))
    else:
        required.append(Need("list", "pods", ns))
    if isinstance(to, PodTarget):
        required.append(Need("list", "pods", ns))  # the reconnect wait LISTs, then WATCHes
    required.append(Need("watch", "pods", ns))
    if spec.transport == "websocket" and not isinstance(to, PodTarget):
        required.append(Need("get", "pods", ns))  # the transport polls its pod

    def pf(verb: str) -> Need:
        return Need(verb, "pods", ns, subresource="portforward", name=pod_name)

    ws = [pf("get")] + ([pf("create")] if websocket_needs_create(version) else [])
    spdy = [pf("create")]
    if spec.transport == "spdy":
        return required, [spdy]
    if spec.transport == "auto":  # (a refused tunnel falls back to SPDY: say create)
        return required, [spdy, ws]
    return required, [ws]


@dataclass
class ForwardCheck:
    """The verdict for one forward."""

    name: str
    namespace: str
    missing: list[Need] = field(default_factory=list)
    allowed: list[Need] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.missing and self.error is None

    def line(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        if self.missing:
            return "missing: " + "; ".join(str(n) for n in self.missing)
        return "allowed"

    def to_json(self) -> dict[str, Any]:
        return {
            "forward": self.name,
            "namespace": self.namespace,
            "allowed": self.ok,
            "missing": [str(n) for n in self.missing],
            "checked": [str(n) for n in self.allowed + self.missing],
            "error": self.error,
        }


async def server_version(client: KubeClient) -> tuple[int, int] | None:
    """(major, minor) from ``/version`` (``"35+"`` counts as 35); None if unreadable."""
    try:
        info = await client.get("/version")
        major = int(re.sub(r"\D", "", str(info.get("major", ""))) or "0")
        minor = int(re.sub(r"\D", "", str(info.get("minor", ""))) or "0")
    except (KubeApiError, ValueError, OSError):
        return None
    return (major, minor) if major else None


async def _allowed(client: KubeClient, need: Need) -> bool:
    answer = await client.post(SSAR_PATH, need.review())
    status = answer.get("status") if isinstance(answer, dict) else None
    return bool(isinstance(status, dict) and status.get("allowed"))


async def check_forward(
    client: KubeClient, spec: ForwardSpec, namespace: str, version: tuple[int, int] | None
) -> ForwardCheck:
    """Ask one review per rule; the missing ones, in the order the forward needs them."""
    result = ForwardCheck(spec.name, namespace)
    required, alternatives = needs(spec, namespace, version)
    answers: dict[Need, bool] = {}

    async def ask(need: Need) -> bool:
        if need not in answers:
            answers[need] = await _allowed(client, need)
        return answers[need]

    for need in required:
        (result.allowed if await ask(need) else result.missing).append(need)
    chosen: list[Need] | None = None
    for option in alternatives:
        if all([await ask(n) for n in option]):
            chosen = option
            break
    if chosen is not None:
        result.allowed.extend(chosen)
    else:  # say what the first (preferred) option lacks
        first = alternatives[0]
        result.allowed.extend(n for n in first if answers[n])
        result.missing.extend(n for n in first if not answers[n])
    return result


# -- at the moment of failure ---------------------------------------------------------

_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<res>[^"]+)" '
    r'in API group "(?P<group>[^"]*)" (?:in the namespace "(?P<ns>[^"]*)"|at the cluster scope)'
)


def forbidden_line(exc: BaseException) -> str | None:
    """One line naming the missing rule for an RBAC 403 (REST or upgrade), else None (a
    gateway's own 403 keeps its words): ``forbidden: User "bob" is missing create
    pods/portforward in namespace shop``."""
    if not isinstance(exc, KubeApiError | UpgradeError) or exc.status != 403:
        return None
    m = _FORBIDDEN.search(str(exc.message or ""))
    if m is None:
        return None
    resource, _, sub = m["res"].partition("/")
    need = Need(m["verb"], resource, m["ns"] or "", sub, m["group"])
    return f'forbidden: User "{m["user"]}" is missing {need}'


async def probe_portforward(endpoint: Endpoint, path: str, port: int) -> None:
    """Open one channel-protocol port-forward and close it at once; raises the server's
    refusal (``UpgradeError`` 401/403…) so the forward is not reported ready without one."""
    client = await dial_channel(endpoint, path, [port])
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        await client.aclose()
