"""What pfcompose sends as kubectl does: Impersonate-* headers, the Host header, and the
exec plugin's KUBERNETES_EXEC_INFO; interactiveMode; plugin failures in one line.

The sandbox records each request's Host and Impersonate-* headers, so kubectl and
pfcompose are compared on the same server with the same kubeconfig.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from pfcompose.kube.access import KubeConfigError
from pfcompose.kube.client import KubeClient
from pfcompose.kube.kubeconfig import evaluate, load_access_sync
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE, requires_kubectl, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.wire.dial import dial_spdy

PF = "/api/v1/namespaces/default/pods/echo/portforward"
POD = "/api/v1/namespaces/default/pods/echo"
V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def with_user(sb: Sandbox, path: Path, **user: Any) -> Path:
    config = yaml.safe_load(sb.kubeconfig_path.read_text())
    config["users"][0]["user"].update(user)
    path.write_text(yaml.safe_dump(config))
    return path


async def pfcompose_requests(kubeconfig: Path) -> None:
    """A GET and a SPDY upgrade, as ``up`` makes them."""
    access = await trio.to_thread.run_sync(load_access_sync, str(kubeconfig), None)
    await KubeClient(access).get(POD)
    stream, _ = await dial_spdy(access.endpoint, PF, "spdy")
    await stream.aclose()


def impersonation(sb: Sandbox, *, upgrade: bool | None = None,
                  target: str | None = None) -> list[Counter[tuple[str, str]]]:
    """Each recorded request's Impersonate-* headers (names case-folded, as HTTP has them)."""
    return [Counter((k.lower(), v) for k, v in seen.impersonate) for seen in sb.auth.seen
            if (upgrade is None or seen.upgrade == upgrade)
            and (target is None or seen.target.split("?")[0] == target)]


IMPERSONATE = {"as": "alice", "as-uid": "u-42", "as-groups": ["devs", "ops"],
               "as-user-extra": {"scopes": ["view", "edit"], "acme.io/team": ["x"]}}


@requires_kubectl
@pytest.mark.kubectl
async def test_impersonation_headers_as_kubectl_sends_them(tmp_path: Path) -> None:
    # (TLS: kubectl 1.32 sends no bearer token to a plain-http server)
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token="s3cret") as sb:
        kubeconfig = with_user(sb, tmp_path / "kc", **IMPERSONATE)
        done = await run_kubectl(kubeconfig, "get", "pod", "echo", "-o", "name")
        assert done.returncode == 0, done.stderr
        kubectl = impersonation(sb, target=POD)
        assert kubectl and all(c == kubectl[0] for c in kubectl)
        assert kubectl[0][("impersonate-user", "alice")] == 1
        sb.auth.seen.clear()
        await pfcompose_requests(kubeconfig)
        ours = impersonation(sb)
        assert ours == [kubectl[0], kubectl[0]]  # the GET and the upgrade
        assert [s.upgrade for s in sb.auth.seen] == [False, True]


def test_impersonation_needs_a_user(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t", "as-groups": ["devs"]}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    with pytest.raises(KubeConfigError) as info:
        evaluate(str(kubeconfig), None)
    assert str(info.value) == ('user "u": as-uid, as-groups and as-user-extra need as '
                               "(the user to impersonate)")


@requires_kubectl
@pytest.mark.kubectl
async def test_host_header_omits_the_default_port_as_kubectl(tmp_path: Path) -> None:
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        sandbox = run_sandbox(State.from_dict(DEFAULT_STATE), host=host, port=80)
        sb = await sandbox.__aenter__()
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}:80 ({exc.strerror})")
    try:
        kubeconfig = tmp_path / "kc"
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        config["clusters"][0]["cluster"]["server"] = f"http://{host}"
        kubeconfig.write_text(yaml.safe_dump(config))
        done = await run_kubectl(kubeconfig, "get", "pod", "echo", "-o", "name")
        assert done.returncode == 0, done.stderr
        kubectl_hosts = {s.host for s in sb.auth.seen}
        assert kubectl_hosts == {host}
        sb.auth.seen.clear()
        await pfcompose_requests(kubeconfig)
        assert {s.host for s in sb.auth.seen} == kubectl_hosts
    finally:
        await sandbox.__aexit__(None, None, None)


# --- exec plugins ---------------------------------------------------------------------------

DUMP_PLUGIN = """\
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"info": info, "stdin_tty": os.isatty(0)}) + "\\n")
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": "s3cret", "expirationTimestamp": "2099-01-01T00:00:00Z"}}))
"""


def exec_kubeconfig(sb: Sandbox, tmp_path: Path, *, api_version: str = V1,
                    mode: str | None = "Never", cluster_info: bool = False,
                    script: str = DUMP_PLUGIN) -> tuple[Path, Path]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(script)
    dump = tmp_path / "dump.jsonl"
    exec_spec: dict[str, Any] = {"apiVersion": api_version, "command": sys.executable,
                                 "args": [str(plugin), str(dump)],
                                 "provideClusterInfo": cluster_info}
    if mode is not None:
        exec_spec["interactiveMode"] = mode
    config = yaml.safe_load(sb.kubeconfig_path.read_text())
    config["users"][0]["user"] = {"exec": exec_spec}
    cluster = config["clusters"][0]["cluster"]
    cluster["extensions"] = [{"name": "client.authentication.k8s.io/exec",
                              "extension": {"audience": "sandbox", "region": "local"}}]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(yaml.safe_dump(config))
    return kubeconfig, dump


def dumps(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@requires_kubectl
@pytest.mark.kubectl
@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_provide_cluster_info_as_kubectl(tmp_path: Path, api_version: str) -> None:
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token="s3cret") as sb:
        kubeconfig, dump = exec_kubeconfig(sb, tmp_path, api_version=api_version,
                                           cluster_info=True)
        done = await run_kubectl(kubeconfig, "get", "pod", "echo", "-o", "name")
        assert done.returncode == 0, done.stderr
        (kubectl,) = dumps(dump)
        dump.unlink()
        material = await trio.to_thread.run_sync(evaluate, str(kubeconfig), None)
        assert material.authorization == "Bearer s3cret"
        assert material.expires is not None and material.expires > 4e9
        (ours,) = dumps(dump)
        assert ours["info"]["apiVersion"] == kubectl["info"]["apiVersion"] == api_version
        assert ours["info"]["kind"] == "ExecCredential"
        assert ours["info"]["spec"] == kubectl["info"]["spec"]
        assert ours["info"]["spec"]["cluster"]["config"] == {"audience": "sandbox",
                                                            "region": "local"}
        assert ours["stdin_tty"] is kubectl["stdin_tty"] is False


def test_interactive_mode_always_without_a_terminal_is_one_line(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
              "users": [{"name": "u", "user": {"exec": {
                  "apiVersion": V1, "command": sys.executable, "args": ["-c", "input()"],
                  "interactiveMode": "Always"}}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeConfigError) as info:  # pytest's stdin is no terminal
        evaluate(str(kubeconfig), None)
    assert info.value.retryable
    assert str(info.value).startswith(
        f'exec plugin "{sys.executable}" needs a terminal (interactiveMode: Always)')
    # IfAvailable without a terminal: runs with stdin at EOF, so input() cannot hang
    config["users"][0]["user"]["exec"]["interactiveMode"] = "IfAvailable"  # type: ignore[index]
    kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeConfigError) as info:
        evaluate(str(kubeconfig), None)
    assert str(info.value) == (f'exec plugin "{sys.executable}" failed: '
                               "EOFError: EOF when reading a line")


@pytest.mark.parametrize(("mode", "interactive"),
                         [("Never", False), ("IfAvailable", True), ("Always", True)])
async def test_plugin_gets_the_terminal_when_the_mode_allows(
        tmp_path: Path, mode: str, interactive: bool) -> None:
    """The evaluation helper as the runtime runs it, with a terminal for stdin."""
    async with run_sandbox(State.from_dict(DEFAULT_STATE), token="s3cret") as sb:
        kubeconfig, dump = exec_kubeconfig(sb, tmp_path, mode=mode)
        leader, follower = os.openpty()
        try:
            request = json.dumps({"kubeconfig": str(kubeconfig), "context": None})
            helper = "from pfcompose.kube.kubeconfig import main; import sys; main(sys.argv[1:])"
            done = await trio.run_process(
                [sys.executable, "-c", helper, request], stdin=follower,
                capture_stdout=True, capture_stderr=True, check=False)
        finally:
            os.close(follower)
            os.close(leader)
        answer = json.loads(done.stdout)
        assert "material" in answer, answer
        (seen,) = dumps(dump)
        assert seen["info"]["spec"]["interactive"] is interactive
        assert seen["stdin_tty"] is interactive


def test_v1_without_interactive_mode_is_kubectls_error(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
              "users": [{"name": "u", "user": {"exec": {"apiVersion": V1, "command": "x"}}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeConfigError) as info:
        evaluate(str(kubeconfig), None)
    # kubectl 1.32: "error: interactiveMode must be specified for u to use exec …"
    assert str(info.value) == (
        "interactiveMode must be specified for u to use exec authentication plugin")
