"""The emulated API server: HTTP/1.1 (h11) on trio, keep-alive, JSON, chunked WATCH.

It routes what kubectl asks when it port-forwards (§10.1): ``/version``, legacy
discovery, GET/LIST/WATCH of pods (watch-list too), GET/LIST of services and
namespaces, GET/LIST/WATCH of apps/v1 workloads, and the ``pods/NAME/portforward``
upgrade, which it hands to the kubelet emulation with the socket (the real API
server proxies bytes; here the "kubelet" is in the same process). ``/_sandbox/``
is the fault-injection API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

import pfcompose.sandbox.discovery as discovery
import pfcompose.sandbox.objects as objects
import pfcompose.sandbox.rbac as rbac
from pfcompose.config.selector import SelectorError, matches, parse_selector
from pfcompose.sandbox.auth import Authenticator
from pfcompose.sandbox.state import Pod, State

__all__ = ["ApiHooks", "ApiServer", "Request"]

MAX_BODY = 1 << 20


@dataclass
class Request:
    """One parsed request, as the routes and the admin API see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    h11_request: h11.Request
    raw_headers: list[tuple[str, str]] = field(default_factory=list)
    user: rbac.User | None = None
    """Who sent it, when the state enables RBAC (sandbox/rbac.py)."""
    denial: tuple[int, Any] | None = None
    """The 401/403 answer it gets, if any (sent instead of routing or upgrading)."""
    auth_outcome: str = "ok"
    """What :class:`~pfcompose.sandbox.auth.Authenticator` said of the credential."""

    def q(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def is_upgrade(self) -> bool:
        return "upgrade" in self.headers.get("connection", "").lower()


class ApiHooks(Protocol):
    """What the API server needs from the rest of the sandbox."""

    state: State
    token: str | None
    auth: Authenticator

    async def portforward(
        self, request: Request, transport: trio.abc.Stream, trailing: bytes, pod: Pod
    ) -> None: ...

    async def admin(self, request: Request) -> tuple[int, Any]: ...


class _Reply(Exception):
    """Raised by a route to answer at once with a status and a JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


_SETTLED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
"""Client states after a request that asks for no protocol switch."""

_NS_RES = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<res>pods|services)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_ALL_RES = re.compile(r"^/api/v1/(?P<res>pods|services)$")
_APPS_NS = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/(?P<res>deployments|statefulsets|replicasets)"
    r"(?:/(?P<name>[^/]+))?$"
)
_APPS_ALL = re.compile(r"^/apis/apps/v1/(?P<res>deployments|statefulsets|replicasets)$")
_APPS_KINDS = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "replicasets": "ReplicaSet",
}
_SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")


class ApiServer:
    """Serves HTTP connections; ``stop()`` aborts every one (upgraded ones included)."""

    def __init__(self, hooks: ApiHooks, server_address: str) -> None:
        self.hooks = hooks
        self.server_address = server_address
        self.requests: list[tuple[str, str]] = []
        """(method, target) of every request, in arrival order (tests read it)."""
        self._request_seen = trio.Event()

    async def wait_for_request(self, predicate: Callable[[str, str], bool]) -> str:
        """Wait until a request (method, target) matching ``predicate`` arrived; its target."""
        while True:
            seen = self._request_seen
            for method, target in self.requests:
                if predicate(method, target):
                    return target
            await seen.wait()

    # -- connection loop --------------------------------------------------------
    async def handle(self, transport: trio.abc.Stream) -> None:
        """Serve one connection until it closes, hands over to the kubelet, or breaks."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request = await self._read_request(conn, transport)
                if request is None:
                    return
                self.requests.append((request.method, request.h11_request.target.decode()))
                self._request_seen.set()
                self._request_seen = trio.Event()
                self._check_access(request, transport)
                if request.is_upgrade and request.denial is None:
                    pod = self._portforward_target(request)
                    if pod is not None and pod.node_name is not None:
                        trailing, _ = conn.trailing_data
                        await self.hooks.portforward(request, transport, bytes(trailing), pod)
                        return
                keep = await self._answer(conn, transport, request)
                if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(transport)

    async def _read_request(
        self, conn: h11.Connection, transport: trio.abc.Stream
    ) -> Request | None:
        req: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await transport.receive_some(65536)
                conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Request):
                req = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                if req is None:
                    return None
                if isinstance(event, h11.EndOfMessage) and conn.their_state not in _SETTLED:
                    continue  # an upgrade request: next_event() reports PAUSED
                break
            else:  # ConnectionClosed
                return None
        assert req is not None
        url = urlsplit(req.target.decode("ascii", "replace"))
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers]
        headers: dict[str, str] = {}
        for k, v in raw:
            headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        return Request(
            req.method.decode(),
            unquote(url.path),
            parse_qs(url.query, True),
            headers,
            bytes(body),
            req,
            raw,
        )

    async def _send(
        self,
        conn: h11.Connection,
        transport: trio.abc.Stream,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache, private"),
            *(extra or []),
        ]
        out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await transport.send_all(out)

    async def _answer(
        self, conn: h11.Connection, transport: trio.abc.Stream, request: Request
    ) -> bool:
        """Route and answer; False when the connection must close afterwards."""
        try:
            if request.path == "/_sandbox/tokens" and request.method == "POST":
                raise _Reply(*self._mint(request))  # the identity provider: no credential
            if request.denial is not None:
                raise _Reply(*request.denial)
            if request.path.startswith("/_sandbox/"):
                status, body = await self.hooks.admin(request)
                raise _Reply(status, body)
            if request.method == "GET" and request.q("watch") in ("true", "1"):
                return await self._watch(conn, transport, request)
            self._route(request)
        except _Reply as reply:
            if reply.status == 200 and "as=Table" in request.headers.get("accept", ""):
                reply.body = _as_table(reply.body, self.hooks.state.resource_version)
            if isinstance(reply.body, bytes):
                await self._send(
                    conn, transport, reply.status, reply.body, "text/plain; charset=utf-8"
                )
            else:
                await self._send(
                    conn,
                    transport,
                    reply.status,
                    json.dumps(reply.body, separators=(",", ":")).encode(),
                )
        return True

    def _check_access(self, request: Request, transport: trio.abc.Stream) -> None:
        """Authentication first of all (before an upgrade reaches the kubelet), as a real
        API server does, then RBAC when the state enables it: sets ``request.user``, or
        ``request.denial`` (the 401/403 sent instead of routing or upgrading)."""
        if request.method == "POST" and request.path == "/_sandbox/tokens":
            return  # the identity provider: asked without a credential
        authorization = request.headers.get("authorization", "")
        request.auth_outcome = self.hooks.auth.check(
            request.method,
            request.h11_request.target.decode("latin-1"),
            request.headers,
            request.raw_headers,
            request.is_upgrade,
        )
        policy = self.hooks.state.rbac
        if not policy.enabled or request.path.startswith("/_sandbox/"):
            if request.auth_outcome != "ok":
                request.denial = (401, objects.status_json(401, "Unauthorized"))
            return
        cert = transport.getpeercert() if isinstance(transport, trio.SSLStream) else None
        user = policy.authenticate(authorization, cert, self.hooks.token)
        if user is None and self.hooks.auth.enabled and request.auth_outcome == "ok":
            user = rbac.ADMIN  # the sandbox's own token, or one it minted: its identity
        if user is None or request.auth_outcome == "expired":
            request.denial = (401, objects.status_json(401, "Unauthorized"))
            return
        request.user = user
        if request.method == "POST" and request.path.rstrip("/") == _SSAR:
            return  # system:basic-user: everyone may ask what they may do
        wanted = rbac.attributes_of(request.method, request.path, request.query)
        checks = [wanted]
        if (
            request.is_upgrade
            and request.method == "GET"
            and wanted.subresource in ("portforward", "exec", "attach")
            and rbac.websocket_needs_create(getattr(self.hooks, "emulate", None))
        ):
            checks.append(replace(wanted, verb="create"))  # KEP-4006, from 1.35
        for attributes in checks:
            if policy.allows(user, attributes) is None:
                request.denial = (403, rbac.forbidden_status(user, attributes))
                return

    def _review(self, request: Request) -> None:
        """POST …/selfsubjectaccessreviews: may the caller do what the body asks?"""
        try:
            body = rbac.review_request(request.body, request.headers.get("content-type", ""))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Reply(400, objects.status_json(400, f"bad review: {exc}")) from None
        raise _Reply(201, self.hooks.state.rbac.review(request.user or rbac.ADMIN, body))

    def _mint(self, request: Request) -> tuple[int, Any]:
        """``POST /_sandbox/tokens`` (``{"ttl": seconds}`` optional): a short-lived token."""
        try:
            args = json.loads(request.body) if request.body.strip() else {}
            ttl = args.get("ttl") if isinstance(args, dict) else None
            if ttl is not None and (
                isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0
            ):
                raise ValueError
        except ValueError:
            return 400, objects.status_json(400, 'the body must be {"ttl": seconds > 0}')
        return 200, self.hooks.auth.mint(ttl)

    # -- routes ---------------------------------------------------------------------
    def _portforward_target(self, request: Request) -> Pod | None:
        """The pod of a ``…/pods/NAME/portforward`` request, if it exists (else the route
        answers with the API server's error)."""
        m = _NS_RES.match(request.path)
        if not m or m["res"] != "pods" or m["sub"] != "portforward":
            return None
        return self.hooks.state.pods.get((m["ns"], m["name"]))

    def _route(self, request: Request) -> None:
        state = self.hooks.state
        path = request.path.rstrip("/") or "/"
        rv = state.resource_version
        if path == _SSAR and request.method == "POST":
            self._review(request)
        if request.method not in ("GET", "POST"):
            raise _Reply(
                405,
                objects.status_json(
                    405, "the server does not allow this method on the requested resource"
                ),
            )
        if path == "/version":
            # 1.35+ shows in /version (clients choose the WebSocket verbs by it); 1.29 keeps
            # saying 1.32 (kubectl would then skip the tunnel that emulation exists to refuse)
            emulate = getattr(self.hooks, "emulate", None)
            shown = emulate if rbac.websocket_needs_create(emulate) else None
            raise _Reply(200, discovery.version(shown))
        if path == "/api":
            raise _Reply(200, discovery.api_versions(self.server_address))
        if path == "/apis":
            raise _Reply(200, discovery.api_groups())
        if path in ("/api/v1", "/apis/apps/v1"):
            group_version = path.removeprefix("/api/").removeprefix("/apis/")
            raise _Reply(200, discovery.api_resources(group_version))
        if path in ("/healthz", "/livez", "/readyz"):
            raise _Reply(200, b"ok")
        if m := _NAMESPACES.match(path):
            if m["name"] is None:
                raise _Reply(200, objects.namespace_list_json(state.namespaces, rv))
            if m["name"] not in state.namespaces:
                raise _Reply(404, objects.not_found("namespaces", m["name"]))
            raise _Reply(200, objects.namespace_json(m["name"], state.namespaces[m["name"]]))
        if m := _NS_RES.match(path):
            self._core(request, m["res"], m["ns"], m["name"], m["sub"])
        if m := _ALL_RES.match(path):
            self._core(request, m["res"], None, None, None)
        if m := (_APPS_NS.match(path) or _APPS_ALL.match(path)):
            groups = m.groupdict()
            self._apps(m["res"], groups.get("ns"), groups.get("name"))
        raise _Reply(404, b"404 page not found\n")

    def _core(
        self, request: Request, res: str, ns: str | None, name: str | None, sub: str | None
    ) -> None:
        state = self.hooks.state
        if request.method != "GET" and sub != "portforward":
            raise _Reply(
                405,
                objects.status_json(
                    405, "the server does not allow this method on the requested resource"
                ),
            )
        if res == "pods":
            if name is None:
                pods = state.list_pods(ns, self._selector(request))
                pods = [p for p in pods if _field_match(request.q("fieldSelector"), p)]
                raise _Reply(200, objects.pod_list_json(pods, state.resource_version))
            pod = state.pods.get((ns or "", name))
            if pod is None:
                raise _Reply(404, objects.not_found("pods", name))
            if sub is None:
                raise _Reply(200, objects.pod_json(pod))
            if sub == "portforward":
                if pod.node_name is None:
                    raise _Reply(
                        400, objects.status_json(400, f"pod {name} does not have a host assigned")
                    )
                raise _Reply(400, objects.status_json(400, "Upgrade request required"))
            raise _Reply(404, b"404 page not found\n")
        # services
        if sub is not None:
            raise _Reply(404, b"404 page not found\n")
        if name is None:
            svcs = [s for s in state.services.values() if ns is None or s.namespace == ns]
            raise _Reply(200, objects.service_list_json(svcs, state.resource_version))
        svc = state.services.get((ns or "", name))
        if svc is None:
            raise _Reply(404, objects.not_found("services", name))
        raise _Reply(200, objects.service_json(svc))

    def _apps(self, res: str, ns: str | None, name: str | None) -> None:
        state = self.hooks.state
        kind = res.removesuffix("s")
        if name is None:
            items = [
                objects.workload_json(w, self._live(w.namespace, w.selector_string))
                for w in sorted(state.workloads.values(), key=lambda w: (w.namespace, w.name))
                if w.kind == kind and (ns is None or w.namespace == ns)
            ]
            raise _Reply(200, objects.workload_list_json(kind, items, state.resource_version))
        wl = state.workload(kind, ns or "", name)
        if wl is None:
            raise _Reply(404, objects.not_found(f"{res}.apps", name))
        raise _Reply(200, objects.workload_json(wl, self._live(wl.namespace, wl.selector_string)))

    def _live(self, ns: str, selector: str) -> int:
        return sum(
            1 for p in self.hooks.state.list_pods(ns, selector) if p.deletion_timestamp is None
        )

    def _selector(self, request: Request) -> str:
        selector = request.q("labelSelector")
        try:
            parse_selector(selector)
        except SelectorError as exc:
            raise _Reply(
                400, objects.status_json(400, f"unable to parse requirement: {exc}")
            ) from exc
        return selector

    # -- watch ------------------------------------------------------------------------
    async def _watch(
        self, conn: h11.Connection, transport: trio.abc.Stream, request: Request
    ) -> bool:
        """WATCH pods (live events) or apps/v1 workloads (their objects, no changes).

        ``sendInitialEvents=true`` (client-go's watch-list, kubectl ≥1.35's reflectors:
        ``kubectl wait``, ``rollout status``) gets ADDED for every current match, then
        the BOOKMARK annotated ``k8s.io/initial-events-end`` that the client waits for.
        """
        state = self.hooks.state
        m = _NS_RES.match(request.path) or _ALL_RES.match(request.path)
        apps = _APPS_NS.match(request.path) or _APPS_ALL.match(request.path)
        if m and m["res"] == "pods" and not m.groupdict().get("name"):
            kind, api_version, ns = "Pod", "v1", m.groupdict().get("ns")
        elif apps and not apps.groupdict().get("name"):
            kind, api_version, ns = _APPS_KINDS[apps["res"]], "apps/v1", apps.groupdict().get("ns")
        else:
            raise _Reply(
                405,
                objects.status_json(
                    405, "the server does not allow this method on the requested resource"
                ),
            )
        selector = self._selector(request)
        since = request.q("resourceVersion")
        since_rv = int(since) if since.isdigit() else None
        initial_events = request.q("sendInitialEvents") == "true"
        start_rv = state.resource_version
        watcher = None
        workloads: list[dict[str, Any]] = []
        if kind == "Pod":
            watcher = state.watch(ns, selector, None if initial_events else since_rv)
            pending = watcher.receive.statistics().current_buffer_used if initial_events else 0
        else:
            parsed = parse_selector(selector)
            if initial_events or not since_rv:
                workloads = [
                    objects.workload_json(w, self._live(w.namespace, w.selector_string))
                    for w in sorted(state.workloads.values(), key=lambda w: (w.namespace, w.name))
                    if w.kind == kind.lower()
                    and (ns is None or w.namespace == ns)
                    and matches(parsed, w.labels)
                    and _object_field_match(request.q("fieldSelector"), w.name, w.namespace)
                ]
            pending = 0
        bookmark = {
            "type": "BOOKMARK",
            "object": {
                "kind": kind,
                "apiVersion": api_version,
                "metadata": {
                    "resourceVersion": str(start_rv),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            },
        }
        timeout = float(request.q("timeoutSeconds") or "inf")
        headers = [
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-cache, private"),
        ]
        await transport.send_all(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
        client_gone = False

        async def send(doc: dict[str, Any]) -> None:
            line = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
            await transport.send_all(conn.send(h11.Data(data=line)) or b"")

        try:
            async with trio.open_nursery() as nursery:

                async def detect_close() -> None:
                    nonlocal client_gone
                    try:
                        while await transport.receive_some(4096):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    client_gone = True
                    nursery.cancel_scope.cancel()

                nursery.start_soon(detect_close)
                with trio.move_on_after(timeout):
                    for doc in workloads:
                        await send({"type": "ADDED", "object": doc})
                    if initial_events and pending == 0:
                        await send(bookmark)
                    if watcher is None:
                        await trio.sleep_forever()  # workloads never change: until timeout
                    else:
                        async for event in watcher.receive:
                            if _field_match(request.q("fieldSelector"), event.pod):
                                await send(
                                    {"type": event.type, "object": objects.pod_json(event.pod)}
                                )
                            if pending > 0:
                                pending -= 1
                                if pending == 0:
                                    await send(bookmark)
                nursery.cancel_scope.cancel()
        finally:
            if watcher is not None:
                state.unwatch(watcher)
        if client_gone:
            return False
        await transport.send_all(conn.send(h11.EndOfMessage()) or b"")
        return False  # the reader task consumed bytes h11 never saw: do not reuse


def _as_table(body: Any, rv: int) -> Any:
    """kubectl get asks for a Table (server-side printing); lists and objects qualify."""
    if not isinstance(body, dict) or body.get("kind") in (None, "Status") or "metadata" not in body:
        return body  # discovery documents, /version, errors: as they are
    return objects.table_json(body.get("items", [body]), rv, datetime.now(UTC))


def _object_field_match(selector: str, name: str, namespace: str) -> bool:
    """``metadata.name`` / ``metadata.namespace`` field selectors (``rollout status``)."""
    return _fields_match(selector, {"metadata.name": name, "metadata.namespace": namespace})


def _field_match(selector: str, pod: Pod) -> bool:
    """The pod field selectors kubectl uses: ``metadata.name``, ``metadata.namespace``,
    ``status.phase``, ``spec.nodeName`` with ``=``, ``==`` or ``!=``."""
    return _fields_match(
        selector,
        {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "status.phase": pod.phase,
            "spec.nodeName": pod.node_name or "",
        },
    )


def _fields_match(selector: str, fields: dict[str, str]) -> bool:
    """Whether every ``key=value`` / ``key==value`` / ``key!=value`` clause holds; an
    unknown key is the API server's 400."""
    for clause in filter(None, selector.split(",")):
        neg = "!=" in clause
        key, _, value = clause.replace("!=", "=").replace("==", "=").partition("=")
        have = fields.get(key.strip())
        if have is None:
            raise _Reply(
                400,
                objects.status_json(
                    400,
                    f'"{key.strip()}" is not a known field selector: only "metadata.name", '
                    '"metadata.namespace"',
                ),
            )
        if (have == value.strip()) == neg:
            return False
    return True
