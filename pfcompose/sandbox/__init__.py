"""An emulated Kubernetes API server and kubelet for port-forwards (docs/sandbox.md).

``async with run_sandbox(State.from_dict({...})) as sb:`` runs one; nothing in the
client imports this package.

Names are imported on first use (PEP 562), so importing one module of the sandbox
does not run this ``__init__``'s imports of the others (no cycle through the package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pfcompose._util.lazy import lazy_getattr

if TYPE_CHECKING:
    from pfcompose.sandbox.server import PodNotFound, Sandbox, run_sandbox
    from pfcompose.sandbox.state import State, StateError, state_from_forwards_file, state_from_plan

_WHERE = {
    "PodNotFound": "server",
    "Sandbox": "server",
    "run_sandbox": "server",
    "State": "state",
    "StateError": "state",
    "state_from_forwards_file": "state",
    "state_from_plan": "state",
}

__all__ = [
    "PodNotFound",
    "Sandbox",
    "State",
    "StateError",
    "run_sandbox",
    "state_from_forwards_file",
    "state_from_plan",
]

__getattr__ = lazy_getattr(__name__, _WHERE)
