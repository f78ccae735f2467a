"""Discovery documents: the legacy (``application/json``) form only (§10.1).

kubectl asks for aggregated discovery first but accepts plain JSON, after which it
fetches each group-version's ``APIResourceList``. Answering legacy keeps the
sandbox small and exercises the path every client must support.
"""

from __future__ import annotations

from typing import Any

__all__ = ["api_groups", "api_resources", "api_versions", "version"]

_VERBS = ["get", "list", "watch"]


def version(emulate: str | None = None) -> dict[str, Any]:
    """``/version``; ``emulate`` (``1.35``…) is the generation the sandbox plays."""
    minor = (emulate or "1.32").partition(".")[2]
    return {
        "major": "1",
        "minor": minor,
        "gitVersion": f"v1.{minor}.0-pfcompose-sandbox",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_groups() -> dict[str, Any]:
    gv = {"groupVersion": "apps/v1", "version": "v1"}
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": "apps", "versions": [gv], "preferredVersion": gv}],
    }


def _resource(
    name: str,
    kind: str,
    short: list[str] | None = None,
    verbs: list[str] | None = None,
    namespaced: bool = True,
) -> dict[str, Any]:
    singular = "" if "/" in name else kind.lower()
    out: dict[str, Any] = {
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs or _VERBS,
    }
    if short:
        out["shortNames"] = short
    return out


def api_resources(group_version: str) -> dict[str, Any] | None:
    """The ``APIResourceList`` of ``v1`` or ``apps/v1``; None for anything else."""
    if group_version == "v1":
        resources = [
            _resource("namespaces", "Namespace", ["ns"], namespaced=False),
            _resource("pods", "Pod", ["po"]),
            _resource("pods/portforward", "PodPortForwardOptions", verbs=["create", "get"]),
            _resource("services", "Service", ["svc"]),
        ]
    elif group_version == "apps/v1":
        resources = [
            _resource("deployments", "Deployment", ["deploy"]),
            _resource("replicasets", "ReplicaSet", ["rs"]),
            _resource("statefulsets", "StatefulSet", ["sts"]),
        ]
        for r in resources:
            r["categories"] = ["all"]
    else:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
