"""Kubeconfig → :class:`ClusterAccess`: where the API server is and how to authenticate.

The ``kubernetes`` package does the kubeconfig work it is good at: merging the
``KUBECONFIG`` files (``KubeConfigMerger``), picking the context
(``KubeConfigLoader``), running exec credential plugins (``ExecProvider``) and
refreshing auth-provider tokens (oidc/gcp). Its REST client and its temp-file
handling are *not* used: the TLS context is built here straight from the PEM bytes
(CA via ``cadata``; the client key goes through a 0600 file in a private directory
that is removed as soon as ``load_cert_chain`` has read it), so no key material is
left on disk and nothing blocks the trio thread.

``load_access`` is meant to be called again before every (re)connect: token files
are re-read, exec plugins run again and expired auth-provider tokens refreshed, so
a renewed credential is picked up without restarting.

Credentials never appear in an exception message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import urllib3
import yaml
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.exec_provider import ExecProvider
from kubernetes.config.kube_config import ConfigNode, KubeConfigLoader, KubeConfigMerger

from pfcompose.wire.endpoint import Endpoint

__all__ = ["ClusterAccess", "KubeConfigError", "load_access", "load_access_sync"]

DEFAULT_KUBECONFIG = "~/.kube/config"

# The package is untyped: give its constructors a type once, here.
_node: Callable[..., ConfigNode] = ConfigNode
_merger: Callable[[str], KubeConfigMerger] = KubeConfigMerger
_loader: Callable[..., Any] = KubeConfigLoader
_exec_provider: Callable[..., Any] = ExecProvider


class KubeConfigError(Exception):
    """The kubeconfig cannot give a usable cluster access; ``str()`` is one line."""


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


async def load_access(kubeconfig: str | None, context: str | None) -> ClusterAccess:
    """Load ``context`` (default: current-context) from ``kubeconfig`` (default: KUBECONFIG).

    Runs in a worker thread: reading files and exec plugins block. Raises
    :class:`KubeConfigError`.
    """
    return await trio.to_thread.run_sync(load_access_sync, kubeconfig, context)


def load_access_sync(
    kubeconfig: str | None,
    context: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ClusterAccess:
    """Blocking body of :func:`load_access` (also handy in synchronous tests)."""
    env = os.environ if environ is None else environ
    try:
        return _load(kubeconfig, context, env)
    except KubeConfigError:
        raise
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"invalid kubeconfig: {_one_line(str(exc))}") from None
    except ConfigException as exc:
        raise KubeConfigError(f"invalid kubeconfig: {_one_line(str(exc))}") from None
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        raise KubeConfigError(f"cannot read{name}: {exc.strerror or exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # a kubeconfig of the wrong shape; the exception text may quote values: drop it
        raise KubeConfigError(
            f"invalid kubeconfig: unexpected structure ({type(exc).__name__})"
        ) from None


# --- the steps -------------------------------------------------------------------------


def _load(kubeconfig: str | None, context: str | None, env: Mapping[str, str]) -> ClusterAccess:
    merger = _merge(kubeconfig, env)
    merged: ConfigNode = merger.config
    name = context or merged.value.get("current-context") or ""
    if not name:
        raise KubeConfigError(
            "no context chosen: the kubeconfig has no current-context (use --context)"
        )
    ctx_node = _named(merged, "contexts", name)
    if ctx_node is None:
        raise KubeConfigError(f'context "{name}" not found in kubeconfig')
    ctx = ctx_node.value.get("context") or {}
    cluster_name = ctx.get("cluster") or ""
    cluster_item = _named(merged, "clusters", cluster_name)
    if cluster_item is None or not isinstance(cluster_item.value.get("cluster"), dict):
        raise KubeConfigError(
            f'cluster "{cluster_name}" not found in kubeconfig (context "{name}")'
        )
    cluster = _node(f"cluster {cluster_name}", cluster_item.value["cluster"], cluster_item.path)
    user_name = ctx.get("user") or ""
    user_item = _named(merged, "users", user_name) if user_name else None
    user = (
        _node(f"user {user_name}", user_item.value.get("user") or {}, user_item.path)
        if user_item is not None
        else None
    )

    if cluster.value.get("proxy-url"):
        raise KubeConfigError(f"proxy-url is not supported yet (context {name})")
    url = urlsplit(str(cluster.value.get("server") or ""))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise KubeConfigError(
            f'cluster "{cluster_name}" has no valid server URL (context "{name}")'
        )
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise KubeConfigError(f'cluster "{cluster_name}" has an invalid server port') from None

    creds = _credentials(merger, merged, name, user_name, user, cluster)
    ssl_context = _ssl_context(cluster, user, creds, user_name) if url.scheme == "https" else None
    tls_name = cluster.value.get("tls-server-name") or None
    endpoint = Endpoint(
        host=url.hostname,
        port=port,
        ssl_context=ssl_context,
        server_hostname=str(tls_name) if tls_name else None,
        headers=(("Authorization", creds.authorization),) if creds.authorization else (),
    )
    namespace = ctx.get("namespace") or None
    return ClusterAccess(
        context=name,
        namespace=str(namespace) if namespace else None,
        endpoint=endpoint,
        path_prefix=url.path.rstrip("/"),
    )


def _merge(kubeconfig: str | None, env: Mapping[str, str]) -> KubeConfigMerger:
    """Read the kubeconfig file(s) with kubectl's precedence (first file wins)."""
    if kubeconfig:
        path = os.path.expanduser(kubeconfig)
        if not os.path.isfile(path):
            raise KubeConfigError(f"kubeconfig not found: {kubeconfig}")
        paths = [path]
    elif env.get("KUBECONFIG"):
        paths = [os.path.expanduser(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise KubeConfigError(f"no kubeconfig found (KUBECONFIG={env['KUBECONFIG']})")
    else:
        path = os.path.expanduser(DEFAULT_KUBECONFIG)
        if not os.path.isfile(path):
            raise KubeConfigError(
                f"no kubeconfig found at {DEFAULT_KUBECONFIG} (set KUBECONFIG or use --kubeconfig)"
            )
        paths = [path]
    merger = _merger(os.pathsep.join(paths))
    if merger.config is None:
        raise KubeConfigError("no kubeconfig found")
    # The package lets the *last* file's current-context win; kubectl lets the first.
    for cfg in merger.config_files.values():
        if isinstance(cfg, dict) and cfg.get("current-context"):
            merger.config.value["current-context"] = cfg["current-context"]
            break
    return merger


def _named(root: ConfigNode, section: str, name: str) -> ConfigNode | None:
    for item in root.value.get(section) or []:
        node = item if isinstance(item, ConfigNode) else _node(section, item, root.path)
        if isinstance(node.value, dict) and node.value.get("name") == name:
            return node
    return None


# --- credentials ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Credentials:
    authorization: str | None = None  # full header value: "Bearer …" / "Basic …"
    cert_pem: bytes | None = None  # client certificate/key from an exec plugin
    key_pem: bytes | None = None

    def __repr__(self) -> str:
        return "_Credentials(<redacted>)"


def _credentials(
    merger: KubeConfigMerger,
    merged: ConfigNode,
    context: str,
    user_name: str,
    user: ConfigNode | None,
    cluster: ConfigNode,
) -> _Credentials:
    """One auth method, in the package's order: auth-provider, token, exec, basic."""
    if user is None:
        return _Credentials()
    u = user.value
    if "auth-provider" in u:
        return _Credentials(_auth_provider_token(merger, merged, context, user_name, u))
    if u.get("tokenFile"):
        path = _resolve_path(user, str(u["tokenFile"]))
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise KubeConfigError(
                f'cannot read tokenFile {path} (user "{user_name}"): {exc.strerror}'
            ) from None
        return _Credentials(f"Bearer {token}")
    if u.get("token"):
        return _Credentials(f"Bearer {u['token']}")
    if "exec" in u:
        return _exec_credentials(user, cluster, user_name)
    if u.get("username") and u.get("password"):
        header = urllib3.util.make_headers(basic_auth=f"{u['username']}:{u['password']}")
        return _Credentials(str(header["authorization"]))
    return _Credentials()


def _auth_provider_token(
    merger: KubeConfigMerger, merged: ConfigNode, context: str, user_name: str, u: dict[str, Any]
) -> str:
    provider = u["auth-provider"] or {}
    pname = provider.get("name") if isinstance(provider, dict) else None
    if pname not in ("oidc", "gcp"):
        raise KubeConfigError(f'auth-provider "{pname}" is not supported (user "{user_name}")')
    # The loader refreshes an expired token and persists it (as kubectl does).
    loader = _loader(
        config_dict=merged,
        active_context=context,
        config_base_path=None,
        config_persister=merger.save_changes,
    )
    try:
        token = loader._load_auth_provider_token()
    except KubeConfigError:
        raise
    except Exception as exc:
        raise KubeConfigError(
            f'auth-provider "{pname}" failed (user "{user_name}"): {type(exc).__name__}'
        ) from None
    if not token:
        raise KubeConfigError(f'auth-provider "{pname}" gave no usable token (user "{user_name}")')
    return str(token)


def _exec_credentials(user: ConfigNode, cluster: ConfigNode, user_name: str) -> _Credentials:
    """Run the exec plugin now (no caching: the caller calls us once per connect)."""
    exec_node = user["exec"]
    command = str(exec_node.value.get("command", ""))
    base = os.path.dirname(os.path.abspath(user.path)) if user.path else None
    try:
        status = _exec_provider(exec_node, base, cluster).run()
    except FileNotFoundError:
        raise KubeConfigError(f"exec: executable {command} not found") from None
    except PermissionError:
        raise KubeConfigError(f"exec: executable {command} is not executable") from None
    except ConfigException as exc:
        raise KubeConfigError(f'exec plugin "{command}" failed: {_exec_reason(str(exc))}') from None
    if not isinstance(status, dict):
        raise KubeConfigError(f'exec plugin "{command}" returned no status')
    if status.get("token"):
        return _Credentials(f"Bearer {status['token']}")
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        return _Credentials(
            cert_pem=str(status["clientCertificateData"]).encode(),
            key_pem=str(status["clientKeyData"]).encode(),
        )
    raise KubeConfigError(
        f'exec plugin "{command}" returned neither a token nor a client certificate'
    )


def _exec_reason(message: str) -> str:
    """``exec: process returned 1. <stderr>`` → the stderr's last line."""
    head, sep, stderr = message.partition(". ")
    if sep and head.startswith("exec: process returned"):
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return head.removeprefix("exec: ")
    return _one_line(message.removeprefix("exec: "))


# --- TLS --------------------------------------------------------------------------------


def _ssl_context(
    cluster: ConfigNode, user: ConfigNode | None, creds: _Credentials, user_name: str
) -> ssl.SSLContext:
    insecure = bool(cluster.value.get("insecure-skip-tls-verify"))
    ca = _file_or_data(cluster, "certificate-authority", "CA")
    if ca is not None and insecure:
        raise KubeConfigError(
            "specifying a root certificates file with the insecure flag is not allowed"
        )
    try:
        if ca is not None:
            ctx = ssl.create_default_context(cadata=ca.decode("ascii", errors="replace"))
        else:
            ctx = ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise KubeConfigError(f"cannot load certificate-authority: {_ssl_reason(exc)}") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])  # our HTTP and upgrades are HTTP/1.1 only

    cert, key = creds.cert_pem, creds.key_pem
    if cert is None and user is not None:
        cert = _file_or_data(user, "client-certificate", "client certificate")
        key = _file_or_data(user, "client-key", "client key")
        if (cert is None) != (key is None):
            missing = "client-key" if key is None else "client-certificate"
            raise KubeConfigError(f'user "{user_name}" has no {missing} to go with its pair')
    if cert is not None and key is not None:
        _load_client_cert(ctx, cert, key, user_name)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes, user_name: str) -> None:
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
                f'cannot load client certificate (user "{user_name}"): {_ssl_reason(exc)}'
            ) from None


def _file_or_data(node: ConfigNode, key: str, what: str) -> bytes | None:
    """``<key>-data`` (base64) wins over ``<key>`` (a path relative to its kubeconfig)."""
    data = node.value.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=False)
        except (binascii.Error, ValueError):
            raise KubeConfigError(f"{key}-data is not valid base64") from None
    path = node.value.get(key)
    if not path:
        return None
    full = _resolve_path(node, str(path))
    try:
        return Path(full).read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"cannot read {what} {full}: {exc.strerror}") from None


def _resolve_path(node: ConfigNode, path: str) -> str:
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not node.path:
        return path
    return os.path.join(os.path.dirname(os.path.abspath(node.path)), path)


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:300] if lines else text
