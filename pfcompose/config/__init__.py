"""The configuration layer: forwards.yaml in, a validated ``Plan`` out.

No I/O beyond reading files (and ``--check-ports``, which binds on purpose).
"""

from pfcompose.config.addresses import AddressError, ListenAddress, parse_addresses
from pfcompose.config.load import PROFILES_VARIABLE, load_plan
from pfcompose.config.plan import ForwardSpec, Plan, ReconnectPolicy
from pfcompose.config.ports import PortMap, PortSpecError, parse_port
from pfcompose.config.problems import ConfigErrors, Problem
from pfcompose.config.selector import Requirement, SelectorError, matches, parse_selector

__all__ = [
    "PROFILES_VARIABLE",
    "AddressError",
    "ConfigErrors",
    "ForwardSpec",
    "ListenAddress",
    "Plan",
    "PortMap",
    "PortSpecError",
    "Problem",
    "ReconnectPolicy",
    "Requirement",
    "SelectorError",
    "load_plan",
    "matches",
    "parse_addresses",
    "parse_port",
    "parse_selector",
]
