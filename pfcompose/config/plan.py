"""The resolved plan ``up`` executes, and the rules that turn validated models into it.

Here the file's settings meet client-go's semantics: defaults are applied, targets and
selectors normalised, ports and addresses parsed with kubectl's rules and texts, and
listeners that would collide are found before anything binds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pfcompose.config.addresses import (
    AddressError,
    ListenAddress,
    canonical_ip,
    parse_addresses,
)
from pfcompose.config.healthplan import build_health
from pfcompose.config.model import Defaults, Forward, PortLong
from pfcompose.config.ports import PortMap, PortSpecError, parse_port
from pfcompose.config.problems import ConfigErrors, Pos, Problem, format_path
from pfcompose.config.selector import (
    SelectorError,
    format_selector,
    parse_selector,
    selector_from_labels,
)
from pfcompose.config.spec import ForwardSpec, Plan, ReconnectPolicy
from pfcompose.config.target import PodTarget, SelectorTarget, ServiceTarget, WorkloadTarget
from pfcompose.config.yamlsource import Node, Scalar, find

__all__ = [
    "ConfigErrors",
    "ForwardSpec",
    "ListenAddress",
    "Plan",
    "PortMap",
    "Problem",
    "ReconnectPolicy",
    "build_forward",
    "find_conflicts",
    "forward_warnings",
    "normalize_target",
    "parse_target",
]

DEFAULT_ADDRESSES = ("localhost",)
DEFAULT_KEEPALIVE = 5.0

_KINDS = {
    "pod": "pod", "pods": "pod", "po": "pod",
    "service": "service", "services": "service", "svc": "service",
    "deployment": "deployment", "deployments": "deployment", "deploy": "deployment",
    "statefulset": "statefulset", "statefulsets": "statefulset", "sts": "statefulset",
    "replicaset": "replicaset", "replicasets": "replicaset", "rs": "replicaset",
}  # fmt: skip
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def normalize_target(target: str) -> str:
    """``svc/x`` → ``service/x``, ``x`` → ``pod/x``; raises ValueError naming the problem."""
    return str(parse_target(target))


def parse_target(target: str) -> PodTarget | ServiceTarget | WorkloadTarget:
    """The file's target (``svc/x``, ``deploy/x``, a bare pod name …) as its type;
    raises ValueError naming the problem."""
    kind, slash, name = target.partition("/")
    if not slash:
        kind, name = "pod", target
    if kind not in _KINDS:
        raise ValueError(
            f'unknown kind "{kind}": use pod, service (svc), deployment (deploy), '
            "statefulset (sts) or replicaset (rs)"
        )
    if not name or len(name) > 253 or not _OBJECT_NAME.match(name):
        raise ValueError(
            f'invalid name "{name}": lowercase letters, digits, "-" and ".", '
            "starting and ending with a letter or digit"
        )
    kind = _KINDS[kind]
    if kind == "pod":
        return PodTarget(name)
    if kind == "service":
        return ServiceTarget(name)
    return WorkloadTarget(kind, name)


@dataclass(frozen=True)
class _Origin:
    """Where a setting came from: the forward, ``defaults`` or the built-in default."""

    path: tuple[str | int, ...]
    node: Node | None
    fallback: Pos | None = None  # a key that is not written: point at its parent

    @property
    def pos(self) -> Pos | None:
        return self.fallback if self.node is None else self.node.pos

    def child(self, *loc: str | int) -> _Origin:
        return _Origin((*self.path, *loc), find(self.node, *loc), self.pos)

    def problem(self, message: str) -> Problem:
        return Problem.at(self.pos, format_path(self.path), message)


@dataclass(frozen=True)
class PortSite:
    """One parsed port with where it was written, for conflicts and warnings."""

    forward: str
    index: int
    port: PortMap
    origin: _Origin


@dataclass
class BuiltForward:
    spec: ForwardSpec
    ports: list[PortSite]
    address_origins: list[_Origin]


def _setting(
    name: str, fwd: Forward, fwd_origin: _Origin, defaults: Defaults, defaults_origin: _Origin
) -> tuple[Any, _Origin]:
    value = getattr(fwd, name)
    if value is not None:
        return value, fwd_origin.child(name)
    value = getattr(defaults, name)
    if value is not None:
        return value, defaults_origin.child(name)
    return None, fwd_origin.child(name)


def _empty_is_none(value: str | None) -> str | None:
    return value if value else None


def build_forward(
    name: str,
    fwd: Forward,
    node: Node | None,
    defaults: Defaults,
    defaults_node: Node | None,
    skip: frozenset[str] = frozenset(),
    key_pos: Pos | None = None,
) -> tuple[BuiltForward | None, list[Problem]]:
    """Apply defaults and kubectl's rules to one validated forward.

    ``skip`` names keys that already failed validation: their rules are not checked
    again and no spec is built, but every other key is still checked and reported.
    ``key_pos`` is where the forward's own key (``db:``) is written: a key missing
    from the forward is reported there, not at its first child.
    """
    problems: list[Problem] = []
    here = _Origin(("forwards", name), node)
    base = _Origin(("defaults",), defaults_node)

    def setting(key: str) -> tuple[Any, _Origin]:
        return _setting(key, fwd, here, defaults, base)

    target: PodTarget | ServiceTarget | WorkloadTarget | None = None
    selector: str | None = None
    if skip & {"target", "selector"}:
        pass
    elif fwd.target is not None and fwd.selector is not None:
        problems.append(here.child("selector").problem("set either target or selector, not both"))
    elif fwd.target is None and fwd.selector is None:
        problems.append(
            Problem.at(
                key_pos or here.pos,
                format_path(here.path),
                "a forward needs a target or a selector",
            )
        )
    elif fwd.target is not None:
        try:
            target = parse_target(fwd.target)
        except ValueError as exc:
            problems.append(here.child("target").problem(str(exc)))
    else:
        try:
            if isinstance(fwd.selector, str):
                requirements = parse_selector(fwd.selector)
            else:
                requirements = selector_from_labels(fwd.selector or {})
            if not requirements:
                raise SelectorError("a selector must select something; it is empty")
            selector = format_selector(requirements)
        except SelectorError as exc:
            problems.append(here.child("selector").problem(str(exc)))

    context, _ = setting("context")
    namespace, ns_origin = setting("namespace")
    namespace = _empty_is_none(namespace)
    if namespace is not None and (len(namespace) > 63 or not _NAMESPACE.match(namespace)):
        problems.append(ns_origin.problem(
            f'invalid namespace "{namespace}": a DNS label (lowercase letters, digits, "-")'
        ))  # fmt: skip

    ports: list[PortSite] = []
    if "ports" not in skip:
        ports, port_problems = _ports(name, fwd, here, key_pos)
        problems.extend(port_problems)

    addresses_value, addr_origin = setting("addresses")
    addresses: tuple[str, ...] = (
        DEFAULT_ADDRESSES if addresses_value is None else tuple(addresses_value)
    )
    listen: tuple[ListenAddress, ...] = ()
    address_origins = [addr_origin.child(i) for i in range(len(addresses))]
    try:
        listen = parse_addresses(addresses)
    except AddressError:
        if not addresses:
            problems.append(addr_origin.problem("you must specify at least 1 address"))
        for address, origin in zip(addresses, address_origins, strict=True):
            try:
                parse_addresses([address])
            except AddressError as exc:
                problems.append(origin.problem(str(exc)))

    transport, _ = setting("transport")
    keepalive, _ = setting("keepalive")
    quiet, _ = setting("quiet_connections")
    reconnect, reconnect_problems = _reconnect(fwd, here, defaults, base)
    problems.extend(reconnect_problems)
    health = None
    if "healthcheck" not in skip:
        health, health_problems = build_health(
            fwd, here, defaults, base, [site.port for site in ports]
        )
        problems.extend(health_problems)

    if problems or skip:
        return None, problems
    spec = ForwardSpec(
        name=name,
        to=target if target is not None else SelectorTarget(selector or ""),
        context=_empty_is_none(context),
        namespace=namespace,
        ports=tuple(site.port for site in ports),
        addresses=addresses,
        listen=listen,
        transport=transport or "auto",
        profiles=tuple(fwd.profiles or ()),
        reconnect=reconnect,
        keepalive=DEFAULT_KEEPALIVE if keepalive is None else float(keepalive),
        quiet_connections=bool(quiet),
        context_is_own=bool(fwd.context),
        health=health,
    )
    return BuiltForward(spec, ports, address_origins), []


def _ports(
    name: str, fwd: Forward, here: _Origin, key_pos: Pos | None = None
) -> tuple[list[PortSite], list[Problem]]:
    origin = here.child("ports")
    if not fwd.ports:
        if fwd.ports is None and key_pos is not None:  # no ports key: at the forward's key
            return [], [
                Problem.at(key_pos, format_path(origin.path), "you must specify at least 1 port")
            ]
        return [], [origin.problem("you must specify at least 1 port")]
    sites: list[PortSite] = []
    problems: list[Problem] = []
    for index, entry in enumerate(fwd.ports):
        entry_origin = origin.child(index)
        try:
            port = _long_port(entry) if isinstance(entry, PortLong) else parse_port(entry)
        except PortSpecError as exc:
            message = str(exc)
            where = entry_origin
            if isinstance(entry, PortLong):
                side = "local" if message.startswith("error parsing local") else "remote"
                if find(entry_origin.node, side) is not None:
                    where = entry_origin.child(side)
            problems.append(where.problem(message))
            continue
        sites.append(PortSite(name, index, port, entry_origin))
    return sites, problems


def _long_port(entry: PortLong) -> PortMap:
    if entry.local is None:
        if isinstance(entry.remote, str) and not entry.remote.isdigit():
            raise PortSpecError(
                "a named remote port needs a local port (local: 0 for a random one)"
            )
        return parse_port(str(entry.remote))
    return parse_port(f"{entry.local}:{entry.remote}")


def _reconnect(
    fwd: Forward, here: _Origin, defaults: Defaults, base: _Origin
) -> tuple[ReconnectPolicy, list[Problem]]:
    values: dict[str, Any] = {}
    origins: dict[str, _Origin] = {}
    for field in ("enabled", "initial_backoff", "max_backoff", "hold"):
        for model, origin in ((fwd, here), (defaults, base)):
            value = None if model.reconnect is None else getattr(model.reconnect, field)
            if value is not None:
                values[field] = value
                origins[field] = origin.child("reconnect", field)
                break
    policy = ReconnectPolicy(**values)
    if policy.initial_backoff > policy.max_backoff:
        where = origins.get("initial_backoff") or origins.get("max_backoff") or here
        return policy, [where.problem(
            f"initial_backoff ({policy.initial_backoff:g}s) must not exceed "
            f"max_backoff ({policy.max_backoff:g}s)"
        )]  # fmt: skip
    return policy, []


def forward_warnings(built: BuiltForward) -> list[Problem]:
    """Privileged ports and addresses reachable from the network."""
    warnings: list[Problem] = []
    for site in built.ports:
        if 0 < site.port.local < 1024:
            warnings.append(site.origin.problem(
                f"local port {site.port.local} is below 1024: binding it needs privileges"
            ))  # fmt: skip
    for address, origin in zip(built.spec.addresses, built.address_origins, strict=True):
        if address == "localhost":
            continue
        if not canonical_ip(address).is_loopback:
            warnings.append(origin.problem(
                f"{address} is not a loopback address: the forward is reachable from the network"
            ))  # fmt: skip
    return warnings


@dataclass(frozen=True)
class _Listener:
    site: PortSite
    entry: ListenAddress
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address


def _overlap(a: _Listener, b: _Listener) -> bool:
    if a.entry.family != b.entry.family or a.site.port.local != b.site.port.local:
        return False
    return a.ip == b.ip or a.ip.is_unspecified or b.ip.is_unspecified


def find_conflicts(forwards: Sequence[BuiltForward]) -> list[Problem]:
    """Two listeners on the same local port and overlapping addresses, named both ways.

    Overlapping: the same IP, or a wildcard (``0.0.0.0``, ``::``) against any address
    of its family (tcp6 listeners are IPv6-only, as Go makes them). Port 0 never conflicts.
    """
    listeners: list[_Listener] = []
    for built in forwards:
        for site in built.ports:
            if site.port.local == 0:
                continue
            for entry in built.spec.listen:
                listeners.append(_Listener(site, entry, canonical_ip(entry.address)))
    problems: list[Problem] = []
    reported: set[tuple[int, int]] = set()
    for later_index, later in enumerate(listeners):
        for earlier in listeners[:later_index]:
            if not _overlap(earlier, later):
                continue
            key = (id(earlier.site), id(later.site))
            if key in reported:
                continue
            reported.add(key)
            port = later.site.port.local
            if earlier.site is later.site:
                message = (
                    f"local port {port}: addresses {earlier.entry.address} and "
                    f"{later.entry.address} overlap"
                )
            else:
                where = earlier.site.origin.pos
                at = f" ({where})" if where is not None else ""
                message = (
                    f"local port {port} on {later.entry.address} conflicts with "
                    f"{format_path(earlier.site.origin.path)} on {earlier.entry.address}{at}"
                )
            problems.append(later.site.origin.problem(message))
    return problems


def scalar_text(node: Node | None) -> str | None:
    return node.value if isinstance(node, Scalar) and isinstance(node.value, str) else None
