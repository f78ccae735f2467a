"""Cluster access and target resolution: kubeconfig → endpoint, target → pod and ports.

Names are imported on first use (PEP 562), and nothing here imports the
``kubernetes`` package until a kubeconfig is evaluated (:mod:`pfcompose.kube.kubeconfig`):
the command line can read :mod:`pfcompose.kube.access` without trio, and the
forwarding runtime never loads the kubernetes package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pfcompose._util.lazy import lazy_getattr

if TYPE_CHECKING:
    from pfcompose.kube.access import AccessMaterial, ClusterAccess, KubeConfigError
    from pfcompose.kube.client import KubeApiError, KubeClient, KubeConnectionError
    from pfcompose.kube.kubeconfig import load_access
    from pfcompose.kube.targets import (
        NoReadyPod,
        PodNotRunning,
        ResolvedTarget,
        ResolveError,
        TargetError,
        is_ready_pod,
        pick_pod,
        pod_query,
        resolve,
        translate_ports,
    )

_WHERE = {
    "AccessMaterial": "access",
    "ClusterAccess": "access",
    "KubeConfigError": "access",
    "load_access": "kubeconfig",
    "KubeApiError": "client",
    "KubeClient": "client",
    "KubeConnectionError": "client",
    "NoReadyPod": "targets",
    "PodNotRunning": "targets",
    "ResolvedTarget": "targets",
    "ResolveError": "targets",
    "TargetError": "targets",
    "is_ready_pod": "targets",
    "pick_pod": "targets",
    "pod_query": "targets",
    "resolve": "targets",
    "translate_ports": "targets",
}

__all__ = [
    "AccessMaterial",
    "ClusterAccess",
    "KubeApiError",
    "KubeClient",
    "KubeConfigError",
    "KubeConnectionError",
    "NoReadyPod",
    "PodNotRunning",
    "ResolveError",
    "ResolvedTarget",
    "TargetError",
    "is_ready_pod",
    "load_access",
    "pick_pod",
    "pod_query",
    "resolve",
    "translate_ports",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
