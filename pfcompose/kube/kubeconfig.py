"""Kubeconfig → :class:`AccessMaterial`, with the ``kubernetes`` package.

The package does the kubeconfig work it is good at: merging the ``KUBECONFIG``
files (``KubeConfigMerger``), picking the context (``KubeConfigLoader``) and refreshing
auth-provider tokens (oidc/gcp). Exec credential plugins are run here, with
client-go's rules (v1/v1beta1, ``interactiveMode``, ``provideClusterInfo``): the
package's runner knows none of them. Its REST client and its temp-file handling
are *not* used: PEM bytes are read here and the TLS context is built by
:func:`pfcompose.kube.access.build_access`.

Each :func:`evaluate` reads everything afresh (token files, exec plugins). The
material records the files it came from and when it expires, so a cache can tell
when to evaluate again. ``python -m pfcompose.kube.kubeconfig`` evaluates once and
prints the material as JSON: the forwarding runtime calls it so that it never
imports this package (~11 MiB resident) itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import ConfigNode, KubeConfigLoader, KubeConfigMerger

from pfcompose.kube.access import (
    AccessMaterial,
    ClusterAccess,
    FileStamp,
    KubeConfigError,
    build_access,
    file_stamp,
    one_line,
    stdin_is_terminal,
)

__all__ = [
    "AUTH_PROVIDER_TTL",
    "DEFAULT_KUBECONFIG",
    "evaluate",
    "load_access",
    "load_access_sync",
    "main",
]

DEFAULT_KUBECONFIG = "~/.kube/config"

AUTH_PROVIDER_TTL = 60.0
"""Seconds an auth-provider (oidc/gcp) token is reused before the package is asked
again (it refreshes only what has expired, so asking is cheap but not free)."""

# The package is untyped: give its constructors a type once, here.
_node: Callable[..., ConfigNode] = ConfigNode
_merger: Callable[[str], KubeConfigMerger] = KubeConfigMerger
_loader: Callable[..., Any] = KubeConfigLoader


def evaluate(
    kubeconfig: str | None,
    context: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> AccessMaterial:
    """Evaluate ``context`` (default: current-context) of ``kubeconfig`` (default:
    KUBECONFIG, else ~/.kube/config). Raises :class:`KubeConfigError` (one line)."""
    env = os.environ if environ is None else environ
    try:
        return _load(kubeconfig, context, env)
    except KubeConfigError:
        raise
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"invalid kubeconfig: {one_line(str(exc))}") from None
    except ConfigException as exc:
        raise KubeConfigError(f"invalid kubeconfig: {one_line(str(exc))}") from None
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        raise KubeConfigError(f"cannot read{name}: {exc.strerror or exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # a kubeconfig of the wrong shape; the exception text may quote values: drop it
        raise KubeConfigError(
            f"invalid kubeconfig: unexpected structure ({type(exc).__name__})"
        ) from None


# --- the steps -------------------------------------------------------------------------


def _load(kubeconfig: str | None, context: str | None, env: Mapping[str, str]) -> AccessMaterial:
    paths = _kubeconfig_paths(kubeconfig, env)
    sources: list[FileStamp] = [file_stamp(path) for path in paths]  # before reading
    merger = _merge(paths)
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

    url = urlsplit(str(cluster.value.get("server") or ""))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise KubeConfigError(
            f'cluster "{cluster_name}" has no valid server URL (context "{name}")'
        )
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise KubeConfigError(f'cluster "{cluster_name}" has an invalid server port') from None

    creds = _credentials(merger, merged, name, user_name, user, cluster, sources)
    ca = cert = key = None
    insecure = False
    if url.scheme == "https":
        insecure = bool(cluster.value.get("insecure-skip-tls-verify"))
        ca = _file_or_data(cluster, "certificate-authority", "CA", sources)
        if ca is not None and insecure:
            raise KubeConfigError(
                "specifying a root certificates file with the insecure flag is not allowed"
            )
        cert, key = creds.cert_pem, creds.key_pem
        if cert is None and user is not None:
            cert = _file_or_data(user, "client-certificate", "client certificate", sources)
            key = _file_or_data(user, "client-key", "client key", sources)
            if (cert is None) != (key is None):
                missing = "client-key" if key is None else "client-certificate"
                raise KubeConfigError(f'user "{user_name}" has no {missing} to go with its pair')
    tls_name = cluster.value.get("tls-server-name") or None
    namespace = ctx.get("namespace") or None
    proxy_url = _proxy_url(cluster, str(cluster.value.get("server")), cluster_name, env)
    impersonate = _impersonation(user.value if user is not None else {}, user_name)
    return AccessMaterial(
        context=name,
        namespace=str(namespace) if namespace else None,
        scheme=url.scheme,
        host=url.hostname,
        port=port,
        user=user_name,
        path_prefix=url.path.rstrip("/"),
        tls_server_name=str(tls_name) if tls_name else None,
        insecure=insecure,
        ca_pem=ca,
        cert_pem=cert,
        key_pem=key,
        authorization=creds.authorization,
        expires=creds.expires,
        sources=tuple(sources),
        proxy_url=proxy_url,
        impersonate=impersonate,
    )


def _impersonation(u: Mapping[str, Any], user_name: str) -> tuple[tuple[str, str], ...]:
    """kubeconfig ``as``/``as-uid``/``as-groups``/``as-user-extra`` → ``Impersonate-*``
    headers, as client-go's ImpersonatingRoundTripper sends them on every request."""
    headers: list[tuple[str, str]] = []
    name = u.get("as")
    uid = u.get("as-uid")
    groups = u.get("as-groups") or []
    extra = u.get("as-user-extra") or {}
    if not isinstance(groups, list) or not isinstance(extra, dict):
        raise KubeConfigError(
            f'user "{user_name}": as-groups must be a list, as-user-extra a map of lists'
        )
    if (uid or groups or extra) and not name:
        raise KubeConfigError(
            f'user "{user_name}": as-uid, as-groups and as-user-extra '
            "need as (the user to impersonate)"
        )
    if name:
        headers.append(("Impersonate-User", str(name)))
    if uid:
        headers.append(("Impersonate-Uid", str(uid)))
    headers.extend(("Impersonate-Group", str(g)) for g in groups)
    for key, values in extra.items():
        items = values if isinstance(values, list) else [values]
        header = "Impersonate-Extra-" + _canonical_key(_escape_extra_key(str(key)))
        headers.extend((header, str(v)) for v in items)
    return tuple(headers)


_TOKEN_CHARS = frozenset(
    "!#$&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _escape_extra_key(key: str) -> str:
    """client-go percent-encodes what a header name cannot hold (``%`` itself included)."""
    return "".join(
        ch if ch in _TOKEN_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in key
    )


def _canonical_key(key: str) -> str:
    """Go's CanonicalMIMEHeaderKey for the part after ``Impersonate-Extra-``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def _proxy_url(
    cluster: ConfigNode, server: str, cluster_name: str, env: Mapping[str, str]
) -> str | None:
    """client-go: ``proxy-url`` when set (every request goes through it), else the
    environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (Go's httpproxy rules)."""
    from pfcompose.wire.proxyenv import env_proxy_for, split_proxy_url

    raw = cluster.value.get("proxy-url")
    where = f'cluster "{cluster_name}" proxy-url'
    if raw:
        value = str(raw)
    else:
        found = env_proxy_for(server, env)
        if found is None:
            return None
        value, where = found, "proxy from the environment (HTTPS_PROXY/HTTP_PROXY)"
    try:
        split_proxy_url(value)
    except ValueError as exc:
        raise KubeConfigError(f"{where}: {exc}") from None
    return value


def _kubeconfig_paths(kubeconfig: str | None, env: Mapping[str, str]) -> list[str]:
    """The kubeconfig file(s), kubectl's precedence: flag, then KUBECONFIG, then default."""
    if kubeconfig:
        path = os.path.expanduser(kubeconfig)
        if not os.path.isfile(path):
            raise KubeConfigError(f"kubeconfig not found: {kubeconfig}")
        return [path]
    if env.get("KUBECONFIG"):
        paths = [os.path.expanduser(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise KubeConfigError(f"no kubeconfig found (KUBECONFIG={env['KUBECONFIG']})")
        return paths
    path = os.path.expanduser(DEFAULT_KUBECONFIG)
    if not os.path.isfile(path):
        raise KubeConfigError(
            f"no kubeconfig found at {DEFAULT_KUBECONFIG} (set KUBECONFIG or use --kubeconfig)"
        )
    return [path]


def _merge(paths: list[str]) -> KubeConfigMerger:
    """Merge the files as kubectl does (the first file wins)."""
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
    authorization: str | None = field(default=None, repr=False)  # "Bearer …" / "Basic …"
    cert_pem: bytes | None = field(default=None, repr=False)  # from an exec plugin
    key_pem: bytes | None = field(default=None, repr=False)
    expires: float | None = None

    def __repr__(self) -> str:
        return "_Credentials(<redacted>)"


def _credentials(
    merger: KubeConfigMerger,
    merged: ConfigNode,
    context: str,
    user_name: str,
    user: ConfigNode | None,
    cluster: ConfigNode,
    sources: list[FileStamp],
) -> _Credentials:
    """One auth method, in the package's order: auth-provider, token, exec, basic."""
    if user is None:
        return _Credentials()
    u = user.value
    if "auth-provider" in u:
        token = _auth_provider_token(merger, merged, context, user_name, u)
        return _Credentials(token, expires=time.time() + AUTH_PROVIDER_TTL)
    if u.get("tokenFile"):
        path = _resolve_path(user, str(u["tokenFile"]))
        sources.append(file_stamp(path))
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
            f'auth-provider "{pname}" failed (user "{user_name}"): {type(exc).__name__}',
            retryable=True,
        ) from None
    if not token:
        raise KubeConfigError(
            f'auth-provider "{pname}" gave no usable token (user "{user_name}")', retryable=True
        )
    return str(token)


EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
EXEC_TIMEOUT = 110.0
"""Seconds an exec plugin may run (a browser login takes a while; below the helper's bound)."""
STDERR_TAIL = 300
"""Characters of a failing plugin's stderr kept for its one-line message."""


def _exec_credentials(user: ConfigNode, cluster: ConfigNode, user_name: str) -> _Credentials:
    """Run the exec plugin now (client-go's rules); the material carries its expiry."""
    exec_node = user["exec"]
    spec = exec_node.value if isinstance(exec_node.value, dict) else {}
    command = str(spec.get("command") or "")
    if not command:
        raise KubeConfigError(f'user "{user_name}": exec has no command')
    api_version = str(spec.get("apiVersion") or "")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeConfigError(
            f'user "{user_name}": exec apiVersion "{api_version}" is not supported '
            f"(use {' or '.join(EXEC_API_VERSIONS)})"
        )
    mode = spec.get("interactiveMode")
    if mode is None or mode == "":
        if api_version.endswith("/v1"):
            raise KubeConfigError(  # kubectl's words
                f"interactiveMode must be specified for {user_name} to use exec "
                "authentication plugin"
            )
        mode = "IfAvailable"
    if mode not in INTERACTIVE_MODES:
        raise KubeConfigError(
            f'user "{user_name}": exec interactiveMode "{mode}" is not one of '
            f"{', '.join(INTERACTIVE_MODES)}"
        )
    terminal = stdin_is_terminal()
    if mode == "Always" and not terminal:
        raise KubeConfigError(
            f'exec plugin "{command}" needs a terminal (interactiveMode: Always) and standard '
            "input is not one: log in with it in a terminal first, or run pfcompose up "
            "(without -d) from a terminal",
            retryable=True,
        )
    interactive = terminal and mode != "Never"
    info: dict[str, Any] = {"interactive": interactive}
    if spec.get("provideClusterInfo"):
        info["cluster"] = _exec_cluster_info(cluster)
    env = dict(os.environ)
    for item in spec.get("env") or []:
        if isinstance(item, dict) and "name" in item:
            env[str(item["name"])] = str(item.get("value", ""))
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": info}
    )
    args = [command, *(str(a) for a in spec.get("args") or [])]
    base = os.path.dirname(os.path.abspath(user.path)) if user.path else None
    if os.sep in command and not os.path.isabs(command) and base is not None:
        args[0] = os.path.normpath(os.path.join(base, command))  # client-go: next to the file
    try:
        done = subprocess.run(
            args,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if interactive else subprocess.PIPE,
            env=env,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        hint = spec.get("installHint")
        extra = f" ({one_line(str(hint))})" if hint else ""
        raise KubeConfigError(f"exec: executable {command} not found{extra}") from None
    except PermissionError:
        raise KubeConfigError(f"exec: executable {command} is not executable") from None
    except subprocess.TimeoutExpired:
        raise KubeConfigError(
            f'exec plugin "{command}" did not answer within {EXEC_TIMEOUT:g}s', retryable=True
        ) from None
    if done.returncode != 0:
        why = _stderr_tail(done.stderr) or f"exit status {done.returncode}"
        raise KubeConfigError(f'exec plugin "{command}" failed: {why}', retryable=True)
    return _exec_status(done.stdout, api_version, command)


def _exec_cluster_info(cluster: ConfigNode) -> dict[str, Any]:
    """``spec.cluster`` of ``KUBERNETES_EXEC_INFO`` (client-go's ``Cluster``)."""
    c = cluster.value
    info: dict[str, Any] = {"server": str(c.get("server") or "")}
    for key in ("tls-server-name", "proxy-url"):
        if c.get(key):
            info[key] = str(c[key])
    if c.get("insecure-skip-tls-verify"):
        info["insecure-skip-tls-verify"] = True
    if c.get("disable-compression"):
        info["disable-compression"] = True
    ca = c.get("certificate-authority-data")
    if not ca and c.get("certificate-authority"):
        path = _resolve_path(cluster, str(c["certificate-authority"]))
        try:
            ca = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        except OSError:
            ca = None
    if ca:
        info["certificate-authority-data"] = str(ca)
    for ext in c.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return info


def _exec_status(stdout: bytes, api_version: str, command: str) -> _Credentials:
    """The plugin's ``ExecCredential`` → credentials (token or client certificate)."""
    try:
        data = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise KubeConfigError(
            f'exec plugin "{command}" printed no ExecCredential JSON', retryable=True
        ) from None
    if not isinstance(data, dict) or data.get("kind") != "ExecCredential":
        raise KubeConfigError(f'exec plugin "{command}" printed no ExecCredential', retryable=True)
    if data.get("apiVersion") != api_version:
        raise KubeConfigError(
            f'exec plugin "{command}": apiVersion "{data.get("apiVersion")}" does not match '
            f'"{api_version}"',
            retryable=True,
        )
    status = data.get("status")
    if not isinstance(status, dict):
        raise KubeConfigError(f'exec plugin "{command}" returned no status', retryable=True)
    expires = _timestamp(status.get("expirationTimestamp"))
    if status.get("token"):
        return _Credentials(f"Bearer {status['token']}", expires=expires)
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        return _Credentials(
            cert_pem=str(status["clientCertificateData"]).encode(),
            key_pem=str(status["clientKeyData"]).encode(),
            expires=expires,
        )
    raise KubeConfigError(
        f'exec plugin "{command}" returned neither a token nor a client certificate',
        retryable=True,
    )


def _stderr_tail(stderr: bytes | None) -> str:
    """The end of a failing plugin's stderr: its last line (where the reason is; the
    lines before are usually progress), cut to :data:`STDERR_TAIL` characters."""
    if not stderr:
        return ""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


def _timestamp(value: object) -> float | None:
    """RFC 3339 (``2026-11-22T10:00:00Z``) → epoch seconds; anything else → no expiry."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


# --- files ------------------------------------------------------------------------------


def _file_or_data(node: ConfigNode, key: str, what: str, sources: list[FileStamp]) -> bytes | None:
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
    sources.append(file_stamp(full))
    try:
        return Path(full).read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"cannot read {what} {full}: {exc.strerror}") from None


def _resolve_path(node: ConfigNode, path: str) -> str:
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not node.path:
        return path
    return os.path.join(os.path.dirname(os.path.abspath(node.path)), path)


# --- the helper process -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m pfcompose.kube.kubeconfig [REQUEST]``: one JSON request
    (``{"kubeconfig": …, "context": …}``) as the argument, else on stdin; one JSON
    answer on stdout: ``{"material": …}`` or ``{"error": "one line", "retryable": …}``.
    Exit status 0 either way. (The runtime passes the request as an argument, so
    that stdin can be the terminal an interactive exec plugin prompts on.)"""
    args = sys.argv[1:] if argv is None else argv
    request = json.loads(args[0] if args else (sys.stdin.readline() or "{}"))
    try:
        material = evaluate(request.get("kubeconfig"), request.get("context"))
        answer: dict[str, Any] = {"material": material.to_json()}
    except KubeConfigError as exc:
        answer = {"error": str(exc), "retryable": exc.retryable}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


async def load_access(kubeconfig: str | None, context: str | None) -> ClusterAccess:
    """Evaluate ``context`` (default: current-context) of ``kubeconfig`` (default: KUBECONFIG).

    Runs in a worker thread: reading files and exec plugins block. Every call
    evaluates afresh (exec plugins run again); :mod:`pfcompose.kube.cache` is the
    caching front for long-running use. Raises :class:`KubeConfigError`.
    """
    import trio

    return await trio.to_thread.run_sync(load_access_sync, kubeconfig, context)


def load_access_sync(
    kubeconfig: str | None,
    context: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ClusterAccess:
    """Blocking body of :func:`load_access` (also handy in synchronous tests)."""
    return build_access(evaluate(kubeconfig, context, environ=environ))


if __name__ == "__main__":
    sys.exit(main())
