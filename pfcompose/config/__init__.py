"""The configuration layer: forwards.yaml in, a validated ``Plan`` out.

No I/O beyond reading files (and ``--check-ports``, which binds on purpose).

Names are imported on first use (PEP 562): the forwarding runtime imports
``pfcompose.config.spec`` and ``.addresses`` without paying for pydantic and the
loader, which only the command line needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pfcompose._util.lazy import lazy_getattr

if TYPE_CHECKING:
    from pfcompose.config.addresses import AddressError, ListenAddress, parse_addresses
    from pfcompose.config.load import PROFILES_VARIABLE, load_plan
    from pfcompose.config.ports import PortMap, PortSpecError, parse_port
    from pfcompose.config.problems import ConfigErrors, Problem
    from pfcompose.config.selector import Requirement, SelectorError, matches, parse_selector
    from pfcompose.config.spec import ForwardSpec, Plan, ReconnectPolicy
    from pfcompose.config.target import (
        PodTarget,
        SelectorTarget,
        ServiceTarget,
        Target,
        WorkloadTarget,
    )

_WHERE = {
    "AddressError": "addresses",
    "ListenAddress": "addresses",
    "parse_addresses": "addresses",
    "PROFILES_VARIABLE": "load",
    "load_plan": "load",
    "ForwardSpec": "spec",
    "Plan": "spec",
    "ReconnectPolicy": "spec",
    "PodTarget": "target",
    "SelectorTarget": "target",
    "ServiceTarget": "target",
    "Target": "target",
    "WorkloadTarget": "target",
    "PortMap": "ports",
    "PortSpecError": "ports",
    "parse_port": "ports",
    "ConfigErrors": "problems",
    "Problem": "problems",
    "Requirement": "selector",
    "SelectorError": "selector",
    "matches": "selector",
    "parse_selector": "selector",
}

__all__ = [
    "PROFILES_VARIABLE",
    "AddressError",
    "ConfigErrors",
    "ForwardSpec",
    "ListenAddress",
    "Plan",
    "PodTarget",
    "PortMap",
    "PortSpecError",
    "Problem",
    "ReconnectPolicy",
    "Requirement",
    "SelectorError",
    "SelectorTarget",
    "ServiceTarget",
    "Target",
    "WorkloadTarget",
    "load_plan",
    "matches",
    "parse_addresses",
    "parse_port",
    "parse_selector",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
