"""Cluster access and target resolution: kubeconfig → endpoint, target → pod and ports.

Nothing here imports the ``kubernetes`` package until a kubeconfig is evaluated
(:mod:`pfcompose.kube.kubeconfig`), so the forwarding runtime stays lean.
"""

from pfcompose.kube.access import AccessMaterial, ClusterAccess, KubeConfigError, load_access
from pfcompose.kube.client import KubeApiError, KubeClient, KubeConnectionError
from pfcompose.kube.resolve import (
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
