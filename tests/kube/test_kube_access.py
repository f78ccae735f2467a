"""kubeconfig → ClusterAccess: every auth and TLS variant, merging, and the error lines."""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from pfcompose.kube import ClusterAccess, KubeConfigError, load_access
from pfcompose.kube.kubeconfig import load_access_sync

SERVER = "https://127.0.0.1:6443"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    name: str = "dev",
    current: str | None = "dev",
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"{name}-cluster", "cluster": {"server": SERVER, **(cluster or {})}}],
        "users": [{"name": f"{name}-user", "user": user or {}}],
        "contexts": [
            {
                "name": name,
                "context": {
                    "cluster": f"{name}-cluster",
                    "user": f"{name}-user",
                    **(context or {}),
                },
            }
        ],
    }
    if current is not None:
        cfg["current-context"] = current
    return cfg


def write(path: Path, cfg: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def load(path: str, context: str | None = None) -> ClusterAccess:
    return load_access_sync(path, context, environ={})


def auth(access: ClusterAccess) -> str | None:
    return dict(access.endpoint.headers).get("Authorization")


def error(path: str | None, context: str | None = None, **environ: str) -> str:
    with pytest.raises(KubeConfigError) as info:
        load_access_sync(path, context, environ=environ)
    return str(info.value)


# --- basics -----------------------------------------------------------------------------


def test_token_server_and_namespace(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        kubeconfig(user={"token": "s3cret"}, context={"namespace": "team-a"}),
    )
    access = load(path)
    assert access.context == "dev"
    assert access.namespace == "team-a"
    assert access.endpoint.host == "127.0.0.1"
    assert access.endpoint.port == 6443
    assert access.endpoint.ssl_context is not None
    assert access.endpoint.server_hostname is None
    assert access.path_prefix == ""
    assert auth(access) == "Bearer s3cret"
    assert "s3cret" not in repr(access)
    assert "s3cret" not in repr(access.endpoint)


def test_no_namespace_plain_http_ipv6_and_path_prefix(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(cluster={"server": "http://[::1]/k8s/clusters/c-1/"}))
    access = load(path)
    assert access.namespace is None
    assert access.endpoint.ssl_context is None
    assert (access.endpoint.host, access.endpoint.port) == ("::1", 80)
    assert access.path_prefix == "/k8s/clusters/c-1"
    assert access.server == "http://[::1]/k8s/clusters/c-1"  # as the URL says (Host too)
    assert auth(access) is None


def test_token_file_is_read_again_on_every_load(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    path = write(tmp_path / "config", kubeconfig(user={"tokenFile": "token"}))  # relative
    assert auth(load(path)) == "Bearer first"
    (tmp_path / "token").write_text("second")
    assert auth(load(path)) == "Bearer second"


def test_token_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "config", kubeconfig(user={"tokenFile": "/nonexistent/tok"}))
    assert error(path) == (
        'cannot read tokenFile /nonexistent/tok (user "dev-user"): No such file or directory'
    )


def test_basic_auth(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(user={"username": "bob", "password": "pw"}))
    assert auth(load(path)) == "Basic " + b64(b"bob:pw")


async def test_async_load_access_uses_kubeconfig_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "config", kubeconfig(user={"token": "t"}))
    monkeypatch.setenv("KUBECONFIG", path)
    access = await load_access(None, None)
    assert access.context == "dev"
    assert auth(access) == "Bearer t"


# --- TLS --------------------------------------------------------------------------------


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(cluster={"insecure-skip-tls-verify": True}))
    ctx = load(path).endpoint.ssl_context
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.check_hostname is False


def test_ca_and_insecure_together_is_kubectls_error(tmp_path: Path, ca: trustme.CA) -> None:
    cluster = {
        "insecure-skip-tls-verify": True,
        "certificate-authority-data": b64(ca.cert_pem.bytes()),
    }
    path = write(tmp_path / "c", kubeconfig(cluster=cluster))
    assert error(path) == (
        "specifying a root certificates file with the insecure flag is not allowed"
    )


def test_ca_data_replaces_system_roots(tmp_path: Path, ca: trustme.CA) -> None:
    cluster = {"certificate-authority-data": b64(ca.cert_pem.bytes())}
    ctx = load(write(tmp_path / "c", kubeconfig(cluster=cluster))).endpoint.ssl_context
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_ca_file_relative_to_kubeconfig(tmp_path: Path, ca: trustme.CA) -> None:
    (tmp_path / "certs").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "certs" / "ca.crt"))
    cluster = {"certificate-authority": "certs/ca.crt", "tls-server-name": "kubernetes"}
    access = load(write(tmp_path / "c", kubeconfig(cluster=cluster)))
    assert access.endpoint.ssl_context is not None
    assert access.endpoint.ssl_context.cert_store_stats()["x509_ca"] == 1
    assert access.endpoint.server_hostname == "kubernetes"


def test_ca_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(cluster={"certificate-authority": "/nope/ca.crt"}))
    assert error(path) == "cannot read CA /nope/ca.crt: No such file or directory"


def test_client_cert_key_mismatch_message_names_no_secret(
    tmp_path: Path, ca: trustme.CA, client_cert: trustme.LeafCert
) -> None:
    other = ca.issue_cert("bob")
    user = {
        "client-certificate-data": b64(client_cert.cert_chain_pems[0].bytes()),
        "client-key-data": b64(other.private_key_pem.bytes()),
    }
    message = error(write(tmp_path / "c", kubeconfig(user=user)))
    assert message.startswith('cannot load client certificate (user "dev-user"): ')
    assert "PRIVATE KEY" not in message


def test_client_cert_without_key(tmp_path: Path, client_cert: trustme.LeafCert) -> None:
    user = {"client-certificate-data": b64(client_cert.cert_chain_pems[0].bytes())}
    assert error(write(tmp_path / "c", kubeconfig(user=user))) == (
        'user "dev-user" has no client-key to go with its pair'
    )


def test_client_cert_temp_files_are_removed(
    tmp_path: Path, client_cert: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)
    user = {
        "client-certificate-data": b64(client_cert.cert_chain_pems[0].bytes()),
        "client-key-data": b64(client_cert.private_key_pem.bytes()),
    }
    load(write(tmp_path / "c", kubeconfig(user=user)))
    assert list(scratch.iterdir()) == []


# --- exec plugins -------------------------------------------------------------------------

PLUGIN = """
import json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
info = json.loads(__import__("os").environ["KUBERNETES_EXEC_INFO"])
json.dump({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
           "status": {"token": f"tok-{n}",
                      "expirationTimestamp": "2099-01-01T00:00:00Z"}}, sys.stdout)
"""

FAILING_PLUGIN = """
import sys
print("starting login", file=sys.stderr)
print("error: you must be logged in to the server", file=sys.stderr)
sys.exit(1)
"""

CERT_PLUGIN = """
import json, sys
cert, key = open(sys.argv[1]).read(), open(sys.argv[2]).read()
json.dump({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
           "status": {"clientCertificateData": cert, "clientKeyData": key}}, sys.stdout)
"""


def exec_user(script: Path, *args: str) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script), *args],
            "interactiveMode": "Never",
        }
    }


def test_exec_plugin_runs_again_on_every_load(tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    path = write(tmp_path / "c", kubeconfig(user=exec_user(script, str(tmp_path / "count"))))
    assert auth(load(path)) == "Bearer tok-1"
    assert auth(load(path)) == "Bearer tok-2"


async def test_exec_plugin_async(tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    path = write(tmp_path / "c", kubeconfig(user=exec_user(script, str(tmp_path / "count"))))
    first = await load_access(path, None)
    second = await load_access(path, None)
    assert (auth(first), auth(second)) == ("Bearer tok-1", "Bearer tok-2")


def test_exec_plugin_failure_shows_last_stderr_line(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(FAILING_PLUGIN)
    path = write(tmp_path / "c", kubeconfig(user=exec_user(script)))
    assert error(path) == (
        f'exec plugin "{sys.executable}" failed: error: you must be logged in to the server'
    )


def test_exec_plugin_not_found(tmp_path: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "no-such-plugin",
                     "interactiveMode": "Never"}}
    path = write(tmp_path / "c", kubeconfig(user=user))
    assert error(path) == "exec: executable no-such-plugin not found"


def test_exec_plugin_bad_output(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("print('not json')")
    path = write(tmp_path / "c", kubeconfig(user=exec_user(script)))
    assert error(path) == f'exec plugin "{sys.executable}" printed no ExecCredential JSON'


def test_exec_plugin_client_certificate(tmp_path: Path, client_cert: trustme.LeafCert) -> None:
    script = tmp_path / "certplugin.py"
    script.write_text(CERT_PLUGIN)
    client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.crt"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    user = exec_user(script, str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    access = load(write(tmp_path / "c", kubeconfig(user=user)))
    assert auth(access) is None
    assert access.endpoint.ssl_context is not None


# --- files, merging, contexts ------------------------------------------------------------


def two_files(tmp_path: Path) -> str:
    first = kubeconfig(
        name="a", current="a", user={"token": "token-a"}, context={"namespace": "from-first"}
    )
    second = kubeconfig(name="b", user={"token": "token-b"}, current="b")
    # a duplicate "a" context in the second file must lose to the first file's
    second["contexts"].append(
        {"name": "a", "context": {"cluster": "b-cluster", "user": "b-user", "namespace": "x"}}
    )
    second["clusters"][0]["cluster"]["server"] = "https://127.0.0.2:7443"
    return os.pathsep.join(
        [
            write(tmp_path / "one", first),
            str(tmp_path / "missing"),  # skipped, as kubectl does
            write(tmp_path / "two", second),
        ]
    )


def test_kubeconfig_env_merges_files_first_wins(tmp_path: Path) -> None:
    env = {"KUBECONFIG": two_files(tmp_path)}
    access = load_access_sync(None, None, environ=env)
    assert (access.context, access.namespace, auth(access)) == ("a", "from-first", "Bearer token-a")
    other = load_access_sync(None, "b", environ=env)
    assert (other.endpoint.host, other.endpoint.port) == ("127.0.0.2", 7443)
    assert auth(other) == "Bearer token-b"


def test_unknown_context(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig())
    assert error(path, "nope") == 'context "nope" not found in kubeconfig'


def test_current_context_unset(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(current=None))
    assert error(path) == "no context chosen: the kubeconfig has no current-context (use --context)"
    assert load(path, "dev").context == "dev"


def test_missing_cluster(tmp_path: Path) -> None:
    cfg = kubeconfig()
    cfg["clusters"] = []
    assert error(write(tmp_path / "c", cfg)) == (
        'cluster "dev-cluster" not found in kubeconfig (context "dev")'
    )


def test_proxy_url_becomes_the_endpoint_proxy(tmp_path: Path) -> None:
    url = "socks5h://alice:p%40ss@jump.corp:1080"
    path = write(tmp_path / "c", kubeconfig(cluster={"proxy-url": url}))
    proxy = load(path).endpoint.proxy
    assert proxy is not None
    assert (proxy.scheme, proxy.host, proxy.port) == ("socks5h", "jump.corp", 1080)
    assert (proxy.username, proxy.password) == ("alice", "p@ss")
    assert "p@ss" not in repr(load(path)) and "p%40ss" not in repr(load(path).endpoint)
    # proxy-url wins over the environment, which is used only without it (and never
    # for a loopback server, as Go)
    assert load_access_sync(write(tmp_path / "l", kubeconfig()), None,
                            environ={"HTTPS_PROXY": "proxy.corp:3128"}).endpoint.proxy is None
    env_path = write(tmp_path / "d", kubeconfig(cluster={"server": "https://api.corp:6443"}))
    access = load_access_sync(env_path, None, environ={"HTTPS_PROXY": "proxy.corp:3128"})
    assert access.endpoint.proxy is not None and access.endpoint.proxy.url == (
        "http://proxy.corp:3128")
    access = load_access_sync(env_path, None, environ={"HTTPS_PROXY": "proxy.corp:3128",
                                                       "NO_PROXY": ".corp"})
    assert access.endpoint.proxy is None
    access = load_access_sync(path, None, environ={"HTTPS_PROXY": "proxy.corp:3128"})
    assert access.endpoint.proxy is not None and access.endpoint.proxy.host == "jump.corp"


def test_bad_proxy_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(cluster={"proxy-url": "ftp://bob:hunter2@p:21"}))
    message = error(path)
    assert message == (
        'cluster "dev-cluster" proxy-url: proxy URL \'ftp://bob:xxxxx@p:21\': '
        "scheme must be one of http, https, socks5, socks5h"
    )


def test_missing_kubeconfig_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert error(str(tmp_path / "nope")) == f"kubeconfig not found: {tmp_path / 'nope'}"
    assert error(None, KUBECONFIG=f"{tmp_path}/x:{tmp_path}/y") == (
        f"no kubeconfig found (KUBECONFIG={tmp_path}/x:{tmp_path}/y)"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    assert error(None) == (
        "no kubeconfig found at ~/.kube/config (set KUBECONFIG or use --kubeconfig)"
    )


def test_invalid_yaml(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("clusters: [\n")
    assert error(str(tmp_path / "c")).startswith("invalid kubeconfig: ")


def test_unsupported_auth_provider(tmp_path: Path) -> None:
    path = write(tmp_path / "c", kubeconfig(user={"auth-provider": {"name": "azure"}}))
    assert error(path) == 'auth-provider "azure" is not supported (user "dev-user")'


def test_oidc_token_not_expired(tmp_path: Path) -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": 4102444800}).encode()).rstrip(b"=")
    id_token = f"eyJhbGciOiJub25lIn0.{claims.decode()}.c2ln"
    user = {"auth-provider": {"name": "oidc", "config": {"id-token": id_token}}}
    assert auth(load(write(tmp_path / "c", kubeconfig(user=user)))) == f"Bearer {id_token}"


def test_malformed_structure(tmp_path: Path) -> None:
    cfg = kubeconfig()
    cfg["users"][0]["user"] = ["not", "a", "mapping"]
    assert error(write(tmp_path / "c", cfg)) == (
        "invalid kubeconfig: unexpected structure (AttributeError)"
    )
