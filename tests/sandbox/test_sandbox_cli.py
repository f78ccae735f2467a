"""``pfcompose sandbox`` as a process: output, kubeconfig, admin API, --from, --tls, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.config import load_plan
from pfcompose.sandbox.pytest_plugin import (
    SandboxProcess,
    kubectl_port_forward,
    requires_kubectl,
    run_kubectl,
    start_sandbox_process,
)
from pfcompose.sandbox.state import state_from_forwards_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "forwards.example.yaml"


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return {"pods": [{"name": "web-0", "labels": {"app": "web"},
                      "ports": [{"containerPort": 80, "name": "http", "serve": "http"}]}]}


def test_startup_lines(sandbox_process: SandboxProcess) -> None:
    out = sandbox_process.output
    assert out[0] == f"Sandbox API server listening on {sandbox_process.url}"
    assert out[1] == (f"kubeconfig written to {sandbox_process.kubeconfig_path} "
                      "(context pfcompose-sandbox)")
    assert out[2:] == ["  pod default/web-0: 80/http=http", "Ready; press Ctrl-C to stop."]
    assert "current-context: pfcompose-sandbox" in sandbox_process.kubeconfig_path.read_text()


def test_admin_api_over_http(sandbox_process: SandboxProcess) -> None:
    state = sandbox_process.admin("GET", "/_sandbox/state")
    assert [(p["name"], p["phase"], p["ready"]) for p in state["pods"]] == [
        ("web-0", "Running", True)]
    assert sandbox_process.admin("POST", "/_sandbox/pods/default/web-0/ready",
                                 {"ready": False}) == {}
    assert sandbox_process.admin("POST", "/_sandbox/streams", {"delay": 0.5}) == {
        "refuse": False, "delay": 0.5, "dial_error": None}
    new = sandbox_process.admin("POST", "/_sandbox/pods/default/web-0/replace",
                                {"grace": 3600})["pod"]
    state = sandbox_process.admin("GET", "/_sandbox/state")
    assert {(p["name"], p["terminating"]) for p in state["pods"]} == {
        ("web-0", True), (new, False)}
    assert sandbox_process.admin("POST", "/_sandbox/pods/default/web-0/kill") == {}
    assert sandbox_process.admin("POST", "/_sandbox/connections/drop") == {"dropped": 0}
    assert [p["name"] for p in sandbox_process.admin("GET", "/_sandbox/state")["pods"]] == [new]
    with pytest.raises(Exception, match="404"):
        sandbox_process.admin("POST", "/_sandbox/pods/default/nope/kill")


@requires_kubectl
@pytest.mark.kubectl
async def test_kubectl_against_the_process(sandbox_process: SandboxProcess) -> None:
    r = await run_kubectl(sandbox_process.kubeconfig_path, "get", "pods", "-o", "name")
    assert (r.returncode, r.stdout) == (0, b"pod/web-0\n")
    async with kubectl_port_forward(sandbox_process.kubeconfig_path, "pod/web-0",
                                    ":http") as fwd:
        (p,) = fwd.local_ports
        assert fwd.lines[0] == f"Forwarding from 127.0.0.1:{p} -> 80"
        body = await http_get(p)
        assert body == b"pfcompose sandbox: pod web-0 namespace default port 80\n"


async def http_get(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    return body


@requires_kubectl
@pytest.mark.kubectl
@pytest.mark.skipif(not EXAMPLE.exists(), reason="forwards.example.yaml is not there")
async def test_from_example_serves_every_target(tmp_path: Path) -> None:
    """Every forward of the example file (profiles included) works with kubectl."""
    state = state_from_forwards_file(EXAMPLE)
    names = list(__import__("yaml").safe_load(EXAMPLE.read_text())["forwards"])
    plan = load_plan([EXAMPLE], selected=names)
    with start_sandbox_process(None, tmp_path, extra_args=["--from", str(EXAMPLE)]) as sb:
        for spec in plan.forwards.values():
            ns = spec.namespace or "default"
            target = spec.target
            if target is None:  # a selector: kubectl needs the pod, as pfcompose resolves it
                r = await run_kubectl(sb.kubeconfig_path, "get", "pods", "-n", ns, "-l",
                                      str(spec.selector), "-o", "name")
                assert r.returncode == 0 and r.stdout.count(b"\n") == 1, (spec.name, r)
                target = r.stdout.decode().strip()
            ports = [f":{p.remote}" for p in spec.ports]
            async with kubectl_port_forward(sb.kubeconfig_path, target, *ports,
                                            namespace=ns) as fwd:
                for local in fwd.local_ports:
                    body = await http_get(local)
                    assert body.startswith(b"pfcompose sandbox: pod "), spec.name
                    assert f" namespace {ns} port ".encode() in body
    assert len(state.pods) == len(plan.forwards)


@requires_kubectl
@pytest.mark.kubectl
async def test_tls_client_cert_and_token(tmp_path: Path) -> None:
    args = ["--tls", "--require-client-cert", "--token", "t0k"]
    with start_sandbox_process({"pods": [{"name": "a", "ports": [80]}]}, tmp_path,
                               extra_args=args) as sb:
        assert sb.url.startswith("https://127.0.0.1:")
        r = await run_kubectl(sb.kubeconfig_path, "get", "pods", "-o", "name")
        assert (r.returncode, r.stdout) == (0, b"pod/a\n"), r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--state", "x.yaml", "--from", "y.yaml"], "--state and --from are mutually exclusive"),
    (["--listen", "nowhere"], "--listen: expected HOST:PORT, got 'nowhere'"),
    (["--require-client-cert"], "--require-client-cert needs --tls"),
])
def test_usage_errors(args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pfcompose", "sandbox", *args],
                       capture_output=True, timeout=30, check=False)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines()[-1] == f"Error: {message}"


def test_bad_state_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "state.yaml"
    bad.write_text("pods:\n  - {labels: {a: b}}\n")
    r = subprocess.run([sys.executable, "-m", "pfcompose", "sandbox", "--state", str(bad)],
                       capture_output=True, timeout=30, check=False)
    assert (r.returncode, r.stderr.decode()) == (2, f"error: {bad}: pods[0]: name is required\n")


def test_address_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "pfcompose", "sandbox", "--listen",
                            f"127.0.0.1:{port}"], capture_output=True, timeout=30, check=False)
    assert (r.returncode, r.stderr.decode()) == (
        1, f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n")
