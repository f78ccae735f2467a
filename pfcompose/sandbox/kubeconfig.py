"""The kubeconfig that points kubectl (or pfcompose) at a sandbox.

One cluster, one user, one context named ``pfcompose-sandbox`` that is also the
current context. Certificates are referenced by path, so the file stays readable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from pfcompose.sandbox.tls import Pki

__all__ = ["CONTEXT", "kubeconfig_dict", "write_kubeconfig"]

CONTEXT = "pfcompose-sandbox"


def kubeconfig_dict(
    url: str,
    *,
    pki: Pki | None = None,
    token: str | None = None,
    namespace: str = "default",
    proxy_url: str | None = None,
    exec_plugin: str | None = None,
) -> dict[str, Any]:
    """``exec_plugin`` (the sandbox's own URL): the user runs the sandbox's exec plugin
    (:mod:`pfcompose.sandbox.execplugin`), which fetches a short-lived token."""
    cluster: dict[str, Any] = {"server": url}
    if proxy_url is not None:
        cluster["proxy-url"] = proxy_url
    user: dict[str, Any] = {}
    if pki is not None:
        cluster["certificate-authority"] = str(pki.ca_cert)
        if exec_plugin is None:  # kubectl prefers a client certificate to an exec plugin
            user["client-certificate"] = str(pki.client_cert)
            user["client-key"] = str(pki.client_key)
    if exec_plugin is not None:
        # the file, run in isolated mode: a login helper of its own (stdlib only, no
        # PYTHONPATH needed, ~0.25 s faster than importing the sandbox package with -m)
        args = ["-I", str(Path(__file__).with_name("execplugin.py")), exec_plugin]
        if pki is not None:
            args += ["--ca", str(pki.ca_cert)]
        user["exec"] = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": args,
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }
    elif token is not None:
        user["token"] = token
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(
    path: Path,
    url: str,
    *,
    pki: Pki | None = None,
    token: str | None = None,
    proxy_url: str | None = None,
    exec_plugin: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = kubeconfig_dict(
        url, pki=pki, token=token, proxy_url=proxy_url, exec_plugin=exec_plugin
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
