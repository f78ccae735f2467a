"""Sandbox authentication: checked before a port-forward upgrade reaches the kubelet,
short-lived minted tokens that expire, and the Host / Impersonate-* headers it records."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from pfcompose.sandbox.execplugin import main as execplugin_main
from pfcompose.sandbox.kubeconfig import write_kubeconfig
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE, requires_kubectl, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.wire.endpoint import Endpoint, open_transport
from pfcompose.wire.http import http_request

UPGRADE = (("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
           ("X-Stream-Protocol-Version", "portforward.k8s.io"))
PF = "/api/v1/namespaces/default/pods/echo/portforward"


async def request(sb: Sandbox, method: str, target: str, *, token: str | None = None,
                  upgrade: bool = False, body: bytes = b"") -> tuple[int, Any]:
    """One request with ``token`` (not the sandbox's own); (status, decoded JSON body)."""
    headers: tuple[tuple[str, str], ...] = ()
    if token is not None:
        headers += (("Authorization", f"Bearer {token}"),)
    endpoint = replace(sb.endpoint, headers=())
    stream = await open_transport(endpoint)
    async with stream:
        response, data = await http_request(stream, endpoint, method, target,
                                            headers + (UPGRADE if upgrade else ()), body=body)
    return response.status_code, json.loads(data) if data.startswith(b"{") else data


def unauthorized(body: Any) -> bool:
    return bool(body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Failure", "message": "Unauthorized",
                         "reason": "Unauthorized", "code": 401})


async def test_upgrade_without_credential_gets_401_before_the_kubelet() -> None:
    async with run_sandbox(State.from_dict(DEFAULT_STATE), token="s3cret") as sb:
        status, body = await request(sb, "POST", PF, upgrade=True)
        assert status == 401 and unauthorized(body)
        status, body = await request(sb, "POST", PF, token="wrong", upgrade=True)
        assert status == 401 and unauthorized(body)
        assert sb.auth.describe()["rejected"] == 2
        assert [s.outcome for s in sb.auth.seen] == ["missing", "invalid"]
        assert all(s.upgrade for s in sb.auth.seen)


async def test_minted_tokens_expire_for_rest_and_upgrades() -> None:
    now = [1_000_000.0]
    async with run_sandbox(State.from_dict(DEFAULT_STATE), token_ttl=5) as sb:
        sb.auth.clock = lambda: now[0]
        status, minted = await request(sb, "POST", "/_sandbox/tokens")  # no credential needed
        assert status == 200 and minted["ttl"] == 5
        assert minted["expirationTimestamp"].endswith("Z")
        token = minted["token"]
        status, pod = await request(sb, "GET", "/api/v1/namespaces/default/pods/echo",
                                    token=token)
        assert status == 200 and pod["metadata"]["name"] == "echo"
        now[0] += 5.0  # lapsed
        status, body = await request(sb, "GET", "/api/v1/namespaces/default/pods/echo",
                                     token=token)
        assert status == 401 and unauthorized(body)
        status, body = await request(sb, "POST", PF, token=token, upgrade=True)
        assert status == 401 and unauthorized(body)
        status, body = await request(sb, "POST", "/_sandbox/tokens", body=b'{"ttl": -1}')
        assert status == 400
        described = sb.auth.describe()
        assert (described["mints"], described["expiredRejected"]) == (1, 2)


async def test_execplugin_prints_an_exec_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token_ttl=30) as sb:
        assert sb.pki is not None
        monkeypatch.setenv("KUBERNETES_EXEC_INFO", json.dumps(
            {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
             "spec": {"interactive": False}}))
        code = await trio.to_thread.run_sync(
            execplugin_main, [sb.url, "--ca", str(sb.pki.ca_cert), "--ttl", "7"])
        assert code == 0
        credential = json.loads(capsys.readouterr().out)
        assert credential["apiVersion"] == "client.authentication.k8s.io/v1beta1"
        assert credential["kind"] == "ExecCredential"
        assert set(credential["status"]) == {"token", "expirationTimestamp"}
        assert sb.auth.mints == 1
        status, _ = await request(sb, "GET", "/api/v1/namespaces/default/pods",
                                  token=credential["status"]["token"])
        assert status == 200


@requires_kubectl
@pytest.mark.kubectl
async def test_kubectl_logs_in_through_the_sandbox_exec_plugin() -> None:
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token_ttl=60) as sb:
        exec_user = yaml.safe_load(sb.kubeconfig_path.read_text())["users"][0]
        assert exec_user["user"]["exec"]["command"] == sys.executable
        done = await run_kubectl(sb.kubeconfig_path, "get", "pod", "echo", "-o", "name")
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().strip() == "pod/echo"
        assert sb.auth.mints == 1  # kubectl ran the plugin once and kept its token
        assert sb.auth.rejected == 0
        # a refused token: kubectl's words for the 401 the sandbox answers with
        bad = write_kubeconfig(sb.workdir / "bad", sb.url, pki=sb.pki, token="sbx-wrong")
        done = await run_kubectl(bad, "get", "pod", "echo")
        assert done.returncode == 1
        assert "error: You must be logged in to the server" in done.stderr.decode()
        assert sb.auth.rejected >= 1


@requires_kubectl
@pytest.mark.kubectl
async def test_token_ttl_on_the_command_line(tmp_path: Path) -> None:
    from pfcompose.sandbox.pytest_plugin import start_sandbox_process

    state = {"pods": [{"name": "a", "ports": [80]}]}
    # --tls: kubectl 1.32 sends no bearer token to a plain-http server
    with start_sandbox_process(state, tmp_path, extra_args=["--tls", "--token-ttl", "30"]) as sb:
        assert ("Tokens live 30s (kubeconfig user: the exec plugin "
                "pfcompose/sandbox/execplugin.py)") in sb.output
        r = await run_kubectl(sb.kubeconfig_path, "get", "pods", "-o", "name")
        assert (r.returncode, r.stdout) == (0, b"pod/a\n"), r.stderr
        cluster = yaml.safe_load(sb.kubeconfig_path.read_text())["clusters"][0]["cluster"]
        ca = ssl.create_default_context(cafile=cluster["certificate-authority"])

        def call(path: str, body: bytes | None = None, token: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            req = urllib.request.Request(sb.url + path, data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=10, context=ca) as resp:
                return json.loads(resp.read())

        minted = call("/_sandbox/tokens", b'{"ttl": 10}')
        described = call("/_sandbox/auth", token=minted["token"])
        assert (described["mints"], described["tokenTTL"]) == (2, 30.0)  # kubectl's + ours
        with pytest.raises(urllib.error.HTTPError) as info:
            call("/_sandbox/auth")  # no credential
        assert info.value.code == 401
