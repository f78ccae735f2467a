"""Cluster access: what a kubeconfig context yields, and the TLS endpoint built from it.

Evaluating a kubeconfig (merging files, running exec plugins, refreshing
auth-provider tokens) is the ``kubernetes`` package's job, in
:mod:`pfcompose.kube.kubeconfig`. Its result is an :class:`AccessMaterial`: plain
data (server, PEM bytes, the Authorization header) plus when it goes stale, so it
can cross a process boundary as JSON. :func:`build_access` turns material into a
:class:`ClusterAccess` with nothing but :mod:`ssl`. The forwarding runtime holds
materials in a cache (:mod:`pfcompose.kube.cache`) and never imports the
``kubernetes`` package itself.

The client key is handed to ``load_cert_chain`` through a 0600 file in a private
directory that is removed as soon as it has been read, so no key material is left
on disk. Credentials never appear in an exception message or a ``repr``.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pfcompose.config.spec import ForwardSpec
    from pfcompose.wire.endpoint import Endpoint
    from pfcompose.wire.proxy import Proxy

__all__ = [
    "AccessMaterial",
    "ClusterAccess",
    "KubeConfigError",
    "Materials",
    "build_access",
    "chosen_context",
    "file_stamp",
    "materials_from_json",
    "materials_to_json",
    "stdin_is_terminal",
]


class KubeConfigError(Exception):
    """The kubeconfig cannot give a usable cluster access; ``str()`` is one line.

    ``retryable`` marks failures that may pass by themselves (an exec plugin or an
    auth-provider failed); the others (no such file or context, a malformed entry)
    need the user to change something.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ClusterAccess:
    """One context's API server endpoint (with credentials) and default namespace."""

    context: str
    namespace: str | None
    """The context's ``namespace``; ``None`` when the context sets none."""
    endpoint: Endpoint
    path_prefix: str = ""
    """Path part of the server URL (``https://rancher/k8s/clusters/c-1`` → ``/k8s/clusters/c-1``),
    to be put in front of every API path. Empty for ordinary clusters."""

    @property
    def server(self) -> str:
        """The server URL for messages (no credentials)."""
        return f"{self.endpoint.scheme}://{self.endpoint.host_header}{self.path_prefix}"

    def __repr__(self) -> str:
        return f"ClusterAccess(context={self.context!r}, server={self.server!r})"


FileStamp = tuple[str, int, int]
"""(path, mtime_ns, size) of a file the material was read from; (path, -1, -1) if absent."""


def file_stamp(path: str) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class AccessMaterial:
    """An evaluated kubeconfig context: everything needed to reach and authenticate.

    ``expires`` (epoch seconds) comes from an exec plugin's ``expirationTimestamp``;
    ``None`` means the material holds until a file in ``sources`` changes or the
    server answers 401 — client-go's rule for exec credentials without an expiry.
    """

    context: str
    namespace: str | None
    scheme: str  # "http" | "https"
    host: str
    port: int
    user: str = ""  # the kubeconfig user's name, for messages
    path_prefix: str = ""
    tls_server_name: str | None = None
    insecure: bool = False
    ca_pem: bytes | None = None
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    authorization: str | None = field(default=None, repr=False)
    expires: float | None = None
    sources: tuple[FileStamp, ...] = ()
    proxy_url: str | None = field(default=None, repr=False)
    """kubeconfig ``proxy-url``, or the environment's proxy for the server; may hold a
    password: messages show ``pfcompose.wire.proxy.redact(proxy_url)``."""
    impersonate: tuple[tuple[str, str], ...] = ()
    """``Impersonate-*`` headers from the kubeconfig's ``as``, ``as-uid``, ``as-groups``,
    ``as-user-extra``: sent on every request and upgrade, as kubectl does."""

    def __repr__(self) -> str:
        return f"AccessMaterial(context={self.context!r}, server={self.scheme}://{self.host})"

    def to_json(self) -> dict[str, Any]:
        def b64(data: bytes | None) -> str | None:
            return base64.b64encode(data).decode("ascii") if data is not None else None

        return {
            "context": self.context,
            "namespace": self.namespace,
            "scheme": self.scheme,
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "path_prefix": self.path_prefix,
            "tls_server_name": self.tls_server_name,
            "insecure": self.insecure,
            "ca_pem": b64(self.ca_pem),
            "cert_pem": b64(self.cert_pem),
            "key_pem": b64(self.key_pem),
            "authorization": self.authorization,
            "expires": self.expires,
            "sources": [list(stamp) for stamp in self.sources],
            "proxy_url": self.proxy_url,
            "impersonate": [list(h) for h in self.impersonate],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessMaterial:
        def unb64(text: str | None) -> bytes | None:
            return base64.b64decode(text) if text is not None else None

        return cls(
            context=data["context"],
            namespace=data["namespace"],
            scheme=data["scheme"],
            host=data["host"],
            port=int(data["port"]),
            user=data.get("user", ""),
            path_prefix=data.get("path_prefix", ""),
            tls_server_name=data.get("tls_server_name"),
            insecure=bool(data.get("insecure")),
            ca_pem=unb64(data.get("ca_pem")),
            cert_pem=unb64(data.get("cert_pem")),
            key_pem=unb64(data.get("key_pem")),
            authorization=data.get("authorization"),
            expires=data.get("expires"),
            sources=tuple((str(p), int(m), int(s)) for p, m, s in data.get("sources", ())),
            proxy_url=data.get("proxy_url"),
            impersonate=tuple((str(k), str(v)) for k, v in data.get("impersonate", ())),
        )


def chosen_context(spec: ForwardSpec, flag: str | None) -> str | None:
    """The context a forward uses: its own ``context`` wins over ``--context``
    (``flag``), which wins over ``defaults.context``; None is the current-context."""
    return spec.context if spec.context_is_own else (flag or spec.context)


Materials = tuple[tuple[str | None, str | None, AccessMaterial], ...]
"""Evaluated contexts handed from the command line to the runtime: (kubeconfig, context,
material) each."""


def materials_to_json(materials: Materials) -> list[Any]:
    return [[kubeconfig, context, m.to_json()] for kubeconfig, context, m in materials]


def materials_from_json(data: Sequence[Any]) -> Materials:
    return tuple((k, c, AccessMaterial.from_json(m)) for k, c, m in data)


def build_access(material: AccessMaterial) -> ClusterAccess:
    """The endpoint for ``material``: TLS context as the kubeconfig says, auth header."""
    from pfcompose.wire.endpoint import Endpoint  # trio: not for the command line's side

    ssl_context = _ssl_context(material) if material.scheme == "https" else None
    endpoint = Endpoint(
        host=material.host,
        port=material.port,
        ssl_context=ssl_context,
        server_hostname=material.tls_server_name,
        headers=(
            *((("Authorization", material.authorization),) if material.authorization else ()),
            *material.impersonate,
        ),
        proxy=_proxy(material, ssl_context),
    )
    return ClusterAccess(
        context=material.context,
        namespace=material.namespace,
        endpoint=endpoint,
        path_prefix=material.path_prefix,
    )


def _proxy(material: AccessMaterial, server_context: ssl.SSLContext | None) -> Proxy | None:
    """The parsed proxy; an ``https`` proxy is verified with the cluster's TLS settings
    (CA, client certificate), as Go's transport and client-go's SPDY dialer do."""
    if not material.proxy_url:
        return None
    from dataclasses import replace

    from pfcompose.wire.proxy import parse_proxy_url

    try:
        proxy = parse_proxy_url(material.proxy_url)
    except ValueError as exc:
        raise KubeConfigError(f"context {material.context}: {exc}") from None
    if proxy.scheme == "https":
        proxy = replace(proxy, ssl_context=server_context or _ssl_context(material))
    return proxy


# --- TLS --------------------------------------------------------------------------------


def _ssl_context(material: AccessMaterial) -> ssl.SSLContext:
    try:
        if material.ca_pem is not None:
            ctx = ssl.create_default_context(cadata=material.ca_pem.decode("ascii", "replace"))
        else:
            ctx = ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise KubeConfigError(f"cannot load certificate-authority: {ssl_reason(exc)}") from None
    if material.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])  # our HTTP and upgrades are HTTP/1.1 only
    if material.cert_pem is not None and material.key_pem is not None:
        _load_client_cert(ctx, material.cert_pem, material.key_pem, material.user)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes, user: str) -> None:
    """``load_cert_chain`` wants files: write them 0600 in a 0700 directory, then delete."""
    with tempfile.TemporaryDirectory(prefix="pfcompose-") as tmp:
        cert_path = os.path.join(tmp, "client.crt")
        key_path = os.path.join(tmp, "client.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as exc:
            raise KubeConfigError(
                f'cannot load client certificate (user "{user}"): {ssl_reason(exc)}'
            ) from None


def stdin_is_terminal() -> bool:
    """client-go's test for an interactive plugin: is *standard input* a terminal."""
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return one_line(str(exc))


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:300] if lines else text
