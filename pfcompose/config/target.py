"""What a forward forwards to, as a type: parsed once in the plan, matched everywhere else.

``up`` treats a named pod differently from everything that stands for a set of pods
(a service, a workload, a label selector): a ``pod/NAME`` that is gone or not running
is waited for by name, the others by readiness of any pod they select. Code asks
``isinstance(spec.to, PodTarget)`` instead of looking for ``"pod/"`` in a string.

The text forms (``str()``: ``pod/web-0``, ``service/web``, ``deployment/api``) are the
normalised ones the plan writes into ``pfcompose config`` and the JSON handed to the
runtime, so the JSON shape is unchanged. A leaf module (no pydantic): the lean
runtime rebuilds targets from that JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "PodTarget",
    "SelectorTarget",
    "ServiceTarget",
    "Target",
    "WorkloadTarget",
    "target_from_text",
]


@dataclass(frozen=True)
class PodTarget:
    """One pod by name: waited for by name, forwarded to while it is Running."""

    name: str
    kind: ClassVar[str] = "pod"

    def __str__(self) -> str:
        return f"pod/{self.name}"


@dataclass(frozen=True)
class ServiceTarget:
    """A service: its selector picks a ready pod, its ports map to the pod's."""

    name: str
    kind: ClassVar[str] = "service"

    def __str__(self) -> str:
        return f"service/{self.name}"


@dataclass(frozen=True)
class WorkloadTarget:
    """A workload (``deployment``, ``statefulset``, ``replicaset``, …): its
    ``spec.selector`` picks a ready pod."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.name else self.kind


@dataclass(frozen=True)
class SelectorTarget:
    """The forward's own label selector (normalised, e.g. ``app=api,tier in (edge,web)``)."""

    selector: str

    def __str__(self) -> str:
        return self.selector


Target = PodTarget | ServiceTarget | WorkloadTarget | SelectorTarget


def target_from_text(target: str | None, selector: str | None) -> Target:
    """The typed target of a plan's ``target`` (``KIND/NAME``) or ``selector`` text.

    For text the plan already normalised (its JSON, a test's spec); the file's own
    spellings (``svc/x``, a bare pod name) are checked and normalised by the plan.
    """
    if target is None:
        if selector is None:
            raise ValueError("a forward needs a target or a selector")
        return SelectorTarget(selector)
    kind, _, name = target.partition("/")
    if kind == "pod":
        return PodTarget(name)
    if kind == "service":
        return ServiceTarget(name)
    return WorkloadTarget(kind, name)
