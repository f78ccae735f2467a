"""An emulated Kubernetes API server and kubelet for port-forwards (docs/sandbox.md).

``async with run_sandbox(State.from_dict({...})) as sb:`` runs one; nothing in the
client imports this package.
"""

from pfcompose.sandbox.server import PodNotFound, Sandbox, run_sandbox
from pfcompose.sandbox.state import State, StateError, state_from_forwards_file, state_from_plan

__all__ = [
    "PodNotFound",
    "Sandbox",
    "State",
    "StateError",
    "run_sandbox",
    "state_from_forwards_file",
    "state_from_plan",
]
