"""The running sandbox: API server + kubelet + pod processes in one trio nursery.

``async with run_sandbox(state) as sb:`` gives a live emulated cluster: ``sb.url``,
``sb.endpoint`` (for pfcompose's own wire code), ``sb.kubeconfig_path`` (for
kubectl), and the fault methods. Leaving the block stops everything it started.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import yaml

from pfcompose.sandbox.apiserver import ApiServer, Request
from pfcompose.sandbox.auth import Authenticator
from pfcompose.sandbox.backends import Backends
from pfcompose.sandbox.faults import StreamFaults, handle_admin
from pfcompose.sandbox.gateway import Gateway, parse_gateway
from pfcompose.sandbox.handoff import KubeletHandoff
from pfcompose.sandbox.kubeconfig import kubeconfig_dict, write_kubeconfig
from pfcompose.sandbox.kubelet import Kubelet
from pfcompose.sandbox.proxy import SandboxProxy
from pfcompose.sandbox.rbac import rbac_admin
from pfcompose.sandbox.state import Pod, State, now
from pfcompose.sandbox.tls import Pki, issue_client_cert, make_pki
from pfcompose.wire.endpoint import Endpoint
from pfcompose.wire.sockio import tune_socket

__all__ = ["PodNotFound", "Sandbox", "run_sandbox"]


class PodNotFound(LookupError):
    """``pods "x" not found`` — a fault named a pod that does not exist."""


class Sandbox:
    """One emulated cluster. Build it with :func:`run_sandbox`."""

    def __init__(
        self,
        state: State,
        nursery: trio.Nursery,
        workdir: Path,
        *,
        host: str,
        port: int,
        pki: Pki | None,
        require_client_cert: bool,
        token: str | None,
        token_ttl: float | None = None,
    ) -> None:
        self.state = state
        self.token = token
        self.auth = Authenticator(lambda: self.token, token_ttl)
        """Who may call the API (checked before upgrades too); mints short-lived tokens."""
        self.pki = pki
        self.host = host
        self.port = port
        self.workdir = workdir
        self.require_client_cert = require_client_cert
        self.stream_faults = StreamFaults()
        self._nursery = nursery
        self.backends = Backends(nursery)
        self.kubelet = Kubelet(self.backends, self.stream_faults)
        self.api = ApiServer(self, "")
        self._api_scope: trio.CancelScope | None = None
        self._api_done = trio.Event()
        self._api_done.set()
        self.kubeconfig_path: Path = workdir / "kubeconfig"
        self.proxy: SandboxProxy | None = None
        self.gateway: Gateway | None = None
        """A gateway in front of the API server (``--gateway``); the kubeconfig points at it."""
        self.handoff: KubeletHandoff | None = None
        """``--emulate 1.36``: WebSocket port-forwards are passed through to the kubelet."""
        self.emulate: str | None = None
        self.prefer_h2 = False
        """TLS: offer ALPN h2 first, as a real kube-apiserver does (and then speak h2 only,
        which the sandbox cannot: a client that offers h2 gets a SETTINGS frame and EOF)."""
        self.alpn_seen: list[str | None] = []
        """The ALPN protocol chosen on each TLS connection."""
        """The built-in proxy (``--proxy``) in front of the API server, if any."""

    # -- addresses ------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.pki else 'http'}://{host}:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        """Where pfcompose's wire code connects; carries the CA, client cert and token."""
        ctx = None
        if self.pki is not None:
            ctx = self.pki.client_context(with_client_cert=True)
        headers: tuple[tuple[str, str], ...] = ()
        if self.token is not None:
            headers = (("Authorization", f"Bearer {self.token}"),)
        return Endpoint(self.host, self.port, ctx, None, headers)

    def write_kubeconfig(self, path: Path | None = None) -> Path:
        """Write a kubeconfig (context ``pfcompose-sandbox``); default: ``kubeconfig_path``."""
        proxy_url = self.proxy.url() if self.proxy is not None else None
        server = self.gateway.url if self.gateway is not None else self.url
        return write_kubeconfig(
            path or self.kubeconfig_path,
            server,
            pki=self.pki,
            token=self.token,
            proxy_url=proxy_url,
            exec_plugin=self.url if self.auth.token_ttl is not None else None,
        )

    async def start_proxy(
        self, kind: str, *, username: str | None = None, password: str | None = None
    ) -> SandboxProxy:
        """Start a built-in proxy (http, https, socks5) and use it for the kubeconfig."""
        proxy = SandboxProxy(
            kind, host=self.host, username=username, password=password, pki=self.pki
        )
        await proxy.start(self._nursery)
        self.proxy = proxy
        return proxy

    async def start_gateway(self, spec: str) -> Gateway:
        """Put a gateway (``websocket-only``, ``idle=N``) in front of the API server."""
        mode, idle = parse_gateway(spec)
        gateway = Gateway(mode, (self.host, self.port), idle=idle, host=self.host, pki=self.pki)
        await gateway.start(self._nursery)
        self.gateway = gateway
        return gateway

    async def set_emulate(self, version: str | None) -> None:
        """Play another server generation: ``1.29`` (no WebSocket tunnel), ``1.35`` (RBAC:
        a WebSocket port-forward also needs ``create``) or ``1.36`` (that, and the API
        server passes WebSocket port-forwards through to the kubelet)."""
        if version not in (None, "1.29", "1.35", "1.36"):
            raise ValueError(f"emulate must be 1.29, 1.35 or 1.36, not {version!r}")
        self.emulate = version
        self.kubelet.no_tunnel = version == "1.29"
        if version == "1.36" and self.handoff is None:
            self.handoff = KubeletHandoff(self)
            await self.handoff.start(self._nursery)

    def proxy_admin(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Admin ``/_sandbox/proxy``: counters; POST also sets ``fault``/``times``."""
        if self.proxy is None:
            raise LookupError("the sandbox runs no proxy (--proxy)")
        if method == "POST":
            times = args.get("times")
            if times is not None and (
                isinstance(times, bool) or not isinstance(times, int) or times < 1
            ):
                raise ValueError("'times' must be a whole number >= 1 or null")
            self.proxy.set_fault(args.get("fault"), times)
        return self.proxy.describe()

    # -- API server lifecycle ----------------------------------------------------------
    async def start_api(self) -> None:
        """(Re)start listening on ``self.port`` (0 the first time: a free port)."""
        if not self._api_done.is_set():
            return
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = int(listeners[0].socket.getsockname()[1])
        self.api.server_address = f"{self.host}:{self.port}"
        self._api_done = trio.Event()
        self._api_scope = trio.CancelScope()
        self._nursery.start_soon(self._serve_api, listeners, self._api_scope, self._api_done)

    async def _serve_api(
        self, listeners: list[trio.SocketListener], scope: trio.CancelScope, done: trio.Event
    ) -> None:
        try:
            with scope:
                await trio.serve_listeners(self._connection, listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            done.set()

    async def _connection(self, stream: trio.SocketStream) -> None:
        tune_socket(stream)
        transport: trio.abc.Stream = stream
        if self.pki is not None:
            ctx = self.pki.server_context(require_client_cert=self.require_client_cert)
            if self.prefer_h2:
                ctx.set_alpn_protocols(["h2", "http/1.1"])
            if self.state.rbac.enabled and not self.require_client_cert:
                ctx.verify_mode = ssl.CERT_OPTIONAL  # RBAC: a client certificate names a user
                ctx.load_verify_locations(self.pki.ca_cert)
            tls = trio.SSLStream(stream, ctx, server_side=True, https_compatible=True)
            try:
                with trio.fail_after(10):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError, OSError):
                await trio.aclose_forcefully(stream)
                return
            transport = tls
            self.alpn_seen.append(tls.selected_alpn_protocol())
            if tls.selected_alpn_protocol() == "h2":
                # what a Go h2 server sends first (an empty SETTINGS frame); an HTTP/1.1
                # request cannot be answered on this connection
                with contextlib.suppress(trio.BrokenResourceError):
                    await tls.send_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                await trio.aclose_forcefully(tls)
                return
        await self.api.handle(transport)

    async def stop_api(self) -> None:
        """Stop the API server: listener closed, every connection (upgraded too) cut."""
        if self._api_scope is not None:
            self._api_scope.cancel()
        await self._api_done.wait()

    def restart_api_soon(self, down: float) -> None:
        """Stop now, start again on the same port after ``down`` seconds (admin API)."""

        async def restart() -> None:
            await self.stop_api()
            await trio.sleep(down)
            await self.start_api()

        self._nursery.start_soon(restart)

    # -- hooks for the API server -------------------------------------------------------
    async def portforward(
        self, request: Request, transport: trio.abc.Stream, trailing: bytes, pod: Pod
    ) -> None:
        if (
            self.handoff is not None
            and self.emulate == "1.36"
            and (request.headers.get("upgrade", "").lower() == "websocket")
        ):
            await self.handoff.forward(request, transport, trailing, pod)
            return
        await self.kubelet.serve(request, transport, trailing, pod)

    def auth_admin(self) -> dict[str, Any]:
        """Admin ``GET /_sandbox/auth``: token mints, rejections, Host/Impersonate-* seen."""
        return self.auth.describe()

    async def admin(self, request: Request) -> tuple[int, Any]:
        if request.path.rstrip("/") == "/_sandbox/rbac":
            return rbac_admin(self.state.rbac, request.method, request.body)
        return await handle_admin(self, request.method, request.path, request.body)

    def write_user_kubeconfig(self, user: str, path: Path) -> Path:
        """A kubeconfig for ``user`` of the state's ``users:``: its token, or (TLS, no
        token) a client certificate the sandbox's CA issues for it (CN = user, O = groups)."""
        token = self.state.rbac.token_of(user)
        if token is not None:
            proxy_url = self.proxy.url() if self.proxy is not None else None
            server = self.gateway.url if self.gateway is not None else self.url
            config = kubeconfig_dict(server, pki=self.pki, proxy_url=proxy_url)
            config["users"][0]["user"] = {"token": token}  # the CA, not the admin's cert
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)
            return path
        if self.pki is None:
            raise LookupError(f"user {user!r} has no token (and the sandbox has no TLS)")
        known = self.state.rbac.users.get(user)
        groups = [g for g in (known.groups if known else ()) if g != "system:authenticated"]
        pki = issue_client_cert(self.pki, user, groups, path.parent / f"{path.name}-pki")
        return write_kubeconfig(path, self.url, pki=pki)

    # -- objects ------------------------------------------------------------------------
    def pod(self, name: str, namespace: str = "default") -> Pod:
        pod = self.state.pods.get((namespace, name))
        if pod is None:
            raise PodNotFound(f'pods "{name}" not found')
        return pod

    async def add_pod(self, pod: Pod) -> Pod:
        """Add a pod (watchers see ADDED) and start its processes."""
        self.state.add_pod(pod)
        await self.backends.start(pod)
        return pod

    def describe(self) -> dict[str, Any]:
        """Pods with their state and where each port's process listens (admin ``state``)."""
        pods = []
        for pod in self.state.pods.values():
            ports = {}
            for cp in pod.ports:
                addr = self.backends.address(pod, cp.container_port)
                ports[str(cp.container_port)] = {
                    "name": cp.name,
                    "serve": cp.serve.kind,
                    "address": f"{addr[0]}:{addr[1]}" if addr else None,
                }
            pods.append(
                {
                    "namespace": pod.namespace,
                    "name": pod.name,
                    "phase": pod.phase,
                    "ready": pod.ready,
                    "terminating": pod.deletion_timestamp is not None,
                    "ports": ports,
                }
            )
        return {
            "url": self.url,
            "resourceVersion": self.state.resource_version,
            "pods": pods,
            "streams": {"refuse": self.stream_faults.refuse, "delay": self.stream_faults.delay},
        }

    # -- faults ---------------------------------------------------------------------------
    async def kill_pod(self, name: str, namespace: str = "default") -> None:
        """The pod is gone: watchers see DELETED, its port-forward sessions are reset
        and closed (kubectl: ``error: lost connection to pod``), its processes die."""
        pod = self.pod(name, namespace)
        self.state.delete_pod(namespace, name)
        self.backends.stop(pod)
        await self.kubelet.pod_gone(pod)

    async def replace_pod(
        self, name: str, namespace: str = "default", *, grace: float = 1.0
    ) -> str:
        """A rollout step: a new pod (new name, same labels and ports) becomes Ready, the
        old one turns terminating (deletionTimestamp, not ready) and is killed after
        ``grace`` seconds. Returns the new pod's name."""
        old = self.pod(name, namespace)
        new = await self.add_pod(self.state.replacement_for(old))
        old.deletion_timestamp = now()
        old.ready = False
        self.state.update_pod(old)

        async def finish() -> None:
            await trio.sleep(grace)
            if self.state.pods.get(old.key) is old:
                await self.kill_pod(old.name, old.namespace)

        self._nursery.start_soon(finish)
        return new.name

    def set_phase(self, name: str, phase: str, namespace: str = "default") -> None:
        pod = self.pod(name, namespace)
        pod.phase = phase
        self.state.update_pod(pod)

    def set_ready(self, name: str, ready: bool, namespace: str = "default") -> None:
        pod = self.pod(name, namespace)
        if ready and not pod.ready:
            pod.ready_since = now()
        pod.ready = ready
        self.state.update_pod(pod)

    def reset_pod_connections(self, name: str, namespace: str = "default") -> int:
        """The app crashed: RST on every pod-side connection (kubelet: RST both streams)."""
        pod = self.pod(name, namespace)
        return self.backends.reset(pod) + self.kubelet.reset_target_connections(pod)

    def set_app_fault(
        self, name: str, port: int, fault: str | None, namespace: str = "default"
    ) -> None:
        """Make the pod's app on ``port`` refuse, answer 500 or hang (``none``: heal)."""
        self.backends.set_app_fault(self.pod(name, namespace), port, fault)

    def drop_upgraded_connections(self) -> int:
        """Cut every port-forward connection at the TCP level (no GOAWAY)."""
        return self.kubelet.drop_all()

    def refuse_streams(self, refuse: bool = True) -> None:
        """Reset new streams instead of replying (client-go: the connection fails)."""
        self.stream_faults.refuse = refuse

    def delay_streams(self, seconds: float) -> None:
        """Wait ``seconds`` before each SYN_REPLY (0 = off)."""
        self.stream_faults.delay = seconds


@asynccontextmanager
async def run_sandbox(
    state: State | None = None,
    *,
    tls: bool = False,
    require_client_cert: bool = False,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    workdir: Path | None = None,
    kubeconfig_path: Path | None = None,
    proxy: str | None = None,
    proxy_user: str | None = None,
    proxy_password: str | None = None,
    gateway: str | None = None,
    emulate: str | None = None,
    token_ttl: float | None = None,
) -> AsyncIterator[Sandbox]:
    """Run a sandbox for the duration of the block; the kubeconfig is written on start.

    ``workdir`` (default: a temporary directory, removed at exit) holds the
    kubeconfig and, with ``tls``, the CA and certificates. ``proxy`` (http, https,
    socks5) starts a built-in proxy whose URL the kubeconfig gets as ``proxy-url``;
    ``https`` implies ``tls`` (the proxy's certificate comes from the same CA).
    ``gateway`` (``websocket-only``, ``idle=SECONDS``) puts a gateway in front (the
    kubeconfig's server); ``emulate`` (``1.29``, ``1.36``) plays that server generation.
    ``token_ttl`` requires short-lived tokens the sandbox mints (the kubeconfig's user
    is the exec plugin :mod:`pfcompose.sandbox.execplugin`, which fetches them).
    """
    tls = tls or proxy == "https"
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="pfcompose-sandbox-")) if workdir is None else workdir
    directory.mkdir(parents=True, exist_ok=True)
    try:
        pki = await trio.to_thread.run_sync(make_pki, directory / "pki") if tls else None
        async with _unwrapped_nursery() as nursery:
            sb = Sandbox(
                state or State(),
                nursery,
                directory,
                host=host,
                port=port,
                pki=pki,
                require_client_cert=require_client_cert,
                token=token,
                token_ttl=token_ttl,
            )
            if kubeconfig_path is not None:
                sb.kubeconfig_path = kubeconfig_path
            for pod in list(sb.state.pods.values()):
                await sb.backends.start(pod)
            await sb.start_api()
            if proxy is not None:
                await sb.start_proxy(proxy, username=proxy_user, password=proxy_password)
            if gateway is not None:
                await sb.start_gateway(gateway)
            await sb.set_emulate(emulate)
            sb.write_kubeconfig()
            try:
                yield sb
            finally:
                sb.state.close_watchers()
                await sb.kubelet.aclose()
                nursery.cancel_scope.cancel()
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def _unwrapped_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose lone exception (e.g. a test's AssertionError) leaves unwrapped."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
