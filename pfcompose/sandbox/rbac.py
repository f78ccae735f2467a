"""RBAC emulation: who is asking (bearer token, client certificate) and may they.

The state file's ``users:`` and ``rbac:`` sections (docs/sandbox.md) switch it on.
Users are found by bearer token, or by a verified client certificate (CN = user,
O = groups), as kube-apiserver's authenticators do; the sandbox's own token and
the ``system:masters`` group are allowed everything (RBAC never sees them on a
real cluster). A rule allows verbs on resources (``pods``, ``pods/portforward``,
``deployments``, ``*``) in some namespaces (none named = all) to users or
``group:NAME``. Requests are turned into attributes the way the API server's
RequestInfo resolver does (GET of a name = get, without = list, ``watch=true`` =
watch, POST = create), and a denial is the API server's Status, word for word::

    pods "x" is forbidden: User "bob" cannot create resource "pods/portforward"
    in API group "" in the namespace "shop"

(one line). A WebSocket upgrade is a GET, so it needs ``get``; servers emulating
1.35 or later also require ``create`` (KEP-4006, feature gate
AuthorizePodWebsocketUpgradeCreatePermission, beta and on from 1.35). Rules can be
replaced at any time (``set``; admin ``/_sandbox/rbac``) and apply to the next request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADMIN",
    "Attributes",
    "Rbac",
    "RbacError",
    "Rule",
    "User",
    "attributes_of",
    "forbidden_status",
    "rbac_admin",
    "review_request",
    "websocket_needs_create",
]

ADMIN_GROUP = "system:masters"


class RbacError(ValueError):
    """A malformed ``users:``/``rbac:`` section; ``str()`` names the place."""


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups


ADMIN = User("sandbox-admin", (ADMIN_GROUP, "system:authenticated"))
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


@dataclass(frozen=True)
class Attributes:
    """What a request does, in authorizer terms."""

    verb: str
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    group: str = ""
    path: str = ""  # set for non-resource requests only

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Rule:
    name: str
    subjects: tuple[str, ...]
    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    namespaces: tuple[str, ...] = ()  # empty = every namespace (a ClusterRoleBinding)
    api_groups: tuple[str, ...] = ("*",)

    def binds(self, user: User) -> bool:
        return any(
            s == user.name or (s.startswith("group:") and s[6:] in user.groups)
            for s in self.subjects
        )

    def allows(self, a: Attributes) -> bool:
        if self.namespaces and a.namespace not in self.namespaces:
            return False
        if "*" not in self.verbs and a.verb not in self.verbs:
            return False
        if "*" not in self.api_groups and a.group not in self.api_groups:
            return False
        full = a.full_resource
        return any(
            r in ("*", full)
            or (r.endswith("/*") and r[:-2] == a.resource and bool(a.subresource))
            or (r.startswith("*/") and a.subresource == r[2:])
            for r in self.resources
        )


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RbacError(f"{where}: expected a string or a list of strings")


class Rbac:
    """Users and rules of one sandbox; ``enabled`` once a state file had either section."""

    def __init__(self) -> None:
        self.enabled = False
        self.tokens: dict[str, User] = {}
        self.users: dict[str, User] = {}
        self.rules: list[Rule] = []
        self._raw: tuple[object, object] = (None, None)

    # -- configuration ----------------------------------------------------------------
    def set(self, users: object, rules: object, source: str = "<rbac>") -> None:
        """Replace users and rules (validated first: a bad section changes nothing)."""
        tokens: dict[str, User] = {}
        named: dict[str, User] = {}
        if users is not None and not isinstance(users, list):
            raise RbacError(f"{source}: users: expected a list")
        for i, raw in enumerate(users or []):
            where = f"{source}: users[{i}]"
            if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
                raise RbacError(f"{where}: name is required")
            unknown = set(raw) - {"name", "token", "groups"}
            if unknown:
                raise RbacError(
                    f"{where}: unknown key {sorted(unknown)[0]!r} (expected name, token, groups)"
                )
            user = User(
                raw["name"],
                (*_strings(raw.get("groups"), where + ".groups"), "system:authenticated"),
            )
            named[user.name] = user
            token = raw.get("token")
            if token is not None:
                if not isinstance(token, str) or not token:
                    raise RbacError(f"{where}.token: expected a string")
                tokens[token] = user
        parsed: list[Rule] = []
        if rules is not None and not isinstance(rules, list):
            raise RbacError(f"{source}: rbac: expected a list")
        for i, raw in enumerate(rules or []):
            where = f"{source}: rbac[{i}]"
            if not isinstance(raw, Mapping):
                raise RbacError(f"{where}: expected a mapping")
            unknown = set(raw) - {
                "name",
                "subjects",
                "verbs",
                "resources",
                "namespaces",
                "apiGroups",
            }
            if unknown:
                raise RbacError(
                    f"{where}: unknown key {sorted(unknown)[0]!r} (expected name, "
                    "subjects, verbs, resources, namespaces, apiGroups)"
                )
            subjects = _strings(raw.get("subjects"), where + ".subjects")
            verbs = _strings(raw.get("verbs"), where + ".verbs")
            resources = _strings(raw.get("resources"), where + ".resources")
            for key, value in (("subjects", subjects), ("verbs", verbs), ("resources", resources)):
                if not value:
                    raise RbacError(f"{where}: {key} is required")
            groups = _strings(raw.get("apiGroups"), where + ".apiGroups") or ("*",)
            parsed.append(
                Rule(
                    str(raw.get("name") or f"rule-{i}"),
                    subjects,
                    verbs,
                    resources,
                    _strings(raw.get("namespaces"), where + ".namespaces"),
                    groups,
                )
            )
        self.tokens, self.users, self.rules = tokens, named, parsed
        self._raw = (users, rules)
        self.enabled = True

    def update(self, changes: Mapping[str, Any]) -> None:
        """Admin ``POST /_sandbox/rbac``: replace ``users`` and/or ``rbac`` (the other stays);
        ``{"enabled": false}`` turns RBAC off."""
        unknown = set(changes) - {"users", "rbac", "enabled"}
        if unknown:
            raise RbacError(f"unknown key {sorted(unknown)[0]!r} (expected users, rbac, enabled)")
        if changes.get("enabled") is False:
            self.enabled = False
            return
        users, rules = self._raw
        self.set(changes.get("users", users), changes.get("rbac", rules), "/_sandbox/rbac")

    def token_of(self, name: str) -> str | None:
        """The bearer token of user ``name`` (for writing that user's kubeconfig)."""
        return next((t for t, u in self.tokens.items() if u.name == name), None)

    def describe(self) -> dict[str, Any]:
        """The admin API's view (tokens are not shown)."""
        return {
            "enabled": self.enabled,
            "users": [
                {"name": u.name, "groups": [g for g in u.groups if g != "system:authenticated"]}
                for u in self.users.values()
            ],
            "rbac": [
                {
                    "name": r.name,
                    "subjects": list(r.subjects),
                    "verbs": list(r.verbs),
                    "resources": list(r.resources),
                    "namespaces": list(r.namespaces),
                    "apiGroups": list(r.api_groups),
                }
                for r in self.rules
            ],
        }

    # -- authentication -----------------------------------------------------------------
    def authenticate(
        self, authorization: str, peer_cert: Mapping[str, Any] | None, admin_token: str | None
    ) -> User | None:
        """The user of a request; None = credentials presented but unknown (401)."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            if admin_token is not None and token == admin_token:
                return ADMIN
            return self.tokens.get(token.strip())
        if peer_cert:
            user = user_of_certificate(peer_cert)
            if user is not None:
                return user
        return ANONYMOUS

    # -- authorization --------------------------------------------------------------------
    def allows(self, user: User, a: Attributes) -> Rule | None:
        """The rule that allows ``a`` for ``user`` (None = denied)."""
        if user.is_admin:
            return Rule("system:masters", ("group:" + ADMIN_GROUP,), ("*",), ("*",))
        if a.path:  # non-resource URLs: discovery, /version, health (system:discovery)
            return Rule("system:discovery", ("group:system:authenticated",), ("get",), ("*",))
        for rule in self.rules:
            if rule.binds(user) and rule.allows(a):
                return rule
        return None

    def review(self, user: User, body: Mapping[str, Any]) -> dict[str, Any]:
        """A SelfSubjectAccessReview answer for ``body``."""
        spec = body.get("spec") if isinstance(body, Mapping) else None
        spec = spec if isinstance(spec, Mapping) else {}
        ra = spec.get("resourceAttributes")
        nra = spec.get("nonResourceAttributes")
        if isinstance(ra, Mapping):
            a = Attributes(
                str(ra.get("verb") or ""),
                str(ra.get("resource") or ""),
                str(ra.get("subresource") or ""),
                str(ra.get("namespace") or ""),
                str(ra.get("name") or ""),
                str(ra.get("group") or ""),
            )
        elif isinstance(nra, Mapping):
            a = Attributes(str(nra.get("verb") or ""), path=str(nra.get("path") or "/"))
        else:
            a = Attributes("")
        rule = self.allows(user, a) if a.verb else None
        status: dict[str, Any] = {"allowed": rule is not None}
        if rule is not None:
            status["reason"] = f'RBAC: allowed by sandbox rule "{rule.name}" to User "{user.name}"'
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": dict(spec),
            "status": status,
        }


def user_of_certificate(cert: Mapping[str, Any]) -> User | None:
    """CN = user name, every O = a group (x509 request authenticator)."""
    cn = None
    groups: list[str] = []
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                groups.append(value)
    if not cn:
        return None
    return User(cn, (*groups, "system:authenticated"))


# -- requests → attributes ---------------------------------------------------------

_CORE = re.compile(
    r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?(?P<res>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_GROUPED = re.compile(
    r"^/apis/(?P<group>[^/]+)/[^/]+/(?:namespaces/(?P<ns>[^/]+)/)?"
    r"(?P<res>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def attributes_of(method: str, path: str, query: Mapping[str, list[str]]) -> Attributes:
    """The API server's RequestInfo for a request (namespaces are a resource too)."""
    path = path.rstrip("/") or "/"
    m = _CORE.match(path) or _GROUPED.match(path)
    if m is None:
        return Attributes(method.lower() if method != "GET" else "get", path=path)
    g = m.groupdict()
    ns, res, name, sub = g.get("ns") or "", g["res"], g.get("name") or "", g.get("sub") or ""
    if res == "namespaces" and not ns and name:
        ns = name
    if method in ("GET", "HEAD"):
        watch = (query.get("watch") or [""])[0] in ("true", "1")
        verb = "watch" if watch else ("get" if name else "list")
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return Attributes(verb, res, sub, ns, name, g.get("group") or "")


def websocket_needs_create(emulate: str | None) -> bool:
    """KEP-4006: from 1.35 a WebSocket upgrade (a GET) must also be allowed ``create``."""
    if not emulate:
        return False
    major, _, minor = emulate.partition(".")
    return (int(major), int(minor or 0)) >= (1, 35)


def forbidden_message(user: User, a: Attributes) -> str:
    """``responsewriters.forbiddenMessage`` + ``errors.NewForbidden``, word for word."""
    if a.path:
        return f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"'
    scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    why = (
        f'User "{user.name}" cannot {a.verb} resource "{a.full_resource}" '
        f'in API group "{a.group}" {scope}'
    )
    qualified = f"{a.resource}.{a.group}" if a.group else a.resource
    if a.name:
        return f'{qualified} "{a.name}" is forbidden: {why}'
    return f"{qualified} is forbidden: {why}"


def forbidden_status(user: User, a: Attributes) -> dict[str, Any]:
    """The 403 Status body a real API server sends."""
    details: dict[str, Any] = {}
    if a.name:
        details["name"] = a.name
    if a.group:
        details["group"] = a.group
    if a.resource:
        details["kind"] = a.resource
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": forbidden_message(user, a),
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


# -- kubectl sends the review as protobuf (application/vnd.kubernetes.protobuf) -----------

_PROTOBUF_MAGIC = b"k8s\x00"
_RESOURCE_FIELDS = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


def _fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of one protobuf message (the last of each number)."""
    out: dict[int, bytes] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            if i >= len(data):
                raise ValueError("truncated protobuf")
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            n = varint()
            out[number] = data[i : i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
    return out


def review_request(body: bytes, content_type: str) -> dict[str, Any]:
    """A SelfSubjectAccessReview request body, JSON or Kubernetes protobuf, as a dict."""
    import json

    if content_type.startswith("application/vnd.kubernetes.protobuf"):
        if not body.startswith(_PROTOBUF_MAGIC):
            raise ValueError("not a Kubernetes protobuf envelope")
        raw = _fields(body[len(_PROTOBUF_MAGIC) :]).get(2, b"")  # runtime.Unknown.raw
        spec = _fields(_fields(raw).get(2, b""))  # SelfSubjectAccessReview.spec
        out: dict[str, Any] = {}
        for number, key, names in (
            (1, "resourceAttributes", _RESOURCE_FIELDS),
            (2, "nonResourceAttributes", _NON_RESOURCE_FIELDS),
        ):
            if number in spec:
                attrs = _fields(spec[number])
                out[key] = {names[n]: v.decode() for n, v in attrs.items() if n in names}
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": out,
        }
    value = json.loads(body or b"{}")
    if not isinstance(value, dict):
        raise ValueError("the body must be a JSON object")
    return value


def rbac_admin(policy: Rbac, method: str, body: bytes) -> tuple[int, Any]:
    """``GET``/``POST /_sandbox/rbac``: see or replace users and rules (effective at once)."""
    import json

    def error(code: int, message: str) -> tuple[int, Any]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "code": code,
        }

    if method == "POST":
        try:
            changes = json.loads(body) if body.strip() else {}
        except ValueError:
            return error(400, "the body must be JSON")
        if not isinstance(changes, dict):
            return error(400, "the body must be a JSON object")
        try:
            policy.update(changes)
        except RbacError as exc:
            return error(400, str(exc))
    elif method != "GET":
        return error(405, f"{method} /_sandbox/rbac: use GET or POST")
    return 200, policy.describe()
