"""The sandbox's exec credential plugin: ``python -m pfcompose.sandbox.execplugin URL``.

It plays a cloud login helper (``aws eks get-token``, ``gke-gcloud-auth-plugin``):
it asks the sandbox at ``URL`` for a short-lived token (``POST /_sandbox/tokens``)
and prints an ``ExecCredential`` with the token and its ``expirationTimestamp``,
in the ``apiVersion`` the caller asked for in ``KUBERNETES_EXEC_INFO`` (v1 or
v1beta1), as client-go and kubectl expect. The sandbox counts every mint, so a
test or benchmark knows how often the plugin ran.

Options: ``--ca FILE`` (the sandbox's CA, for ``--tls``), ``--ttl SECONDS`` (else
the sandbox's ``--token-ttl``). Failure: a message on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

__all__ = ["main"]

DEFAULT_API_VERSION = "client.authentication.k8s.io/v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pfcompose.sandbox.execplugin")
    parser.add_argument("url", help="the sandbox API server, e.g. https://127.0.0.1:6443")
    parser.add_argument("--ca", default=None, help="CA certificate of the sandbox (--tls)")
    parser.add_argument("--ttl", type=float, default=None, help="token lifetime in seconds")
    args = parser.parse_args(argv)
    api_version = DEFAULT_API_VERSION
    info = os.environ.get("KUBERNETES_EXEC_INFO")
    if info:
        with contextlib.suppress(ValueError, AttributeError):
            api_version = str(json.loads(info).get("apiVersion") or api_version)
    body = json.dumps({"ttl": args.ttl} if args.ttl is not None else {}).encode()
    request = urllib.request.Request(
        args.url.rstrip("/") + "/_sandbox/tokens",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            minted = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"sandbox execplugin: cannot get a token from {args.url}: {exc}", file=sys.stderr)
        return 1
    credential = {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": minted["token"], "expirationTimestamp": minted["expirationTimestamp"]},
    }
    sys.stdout.write(json.dumps(credential) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
