"""The real kubectl port-forwards through the sandbox, over the WebSocket tunnel and SPDY."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import trio

from pfcompose.sandbox.backends import blob_sha256
from pfcompose.sandbox.kubelet import dial_error_text
from pfcompose.sandbox.pytest_plugin import kubectl_port_forward, requires_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State

pytestmark = [requires_kubectl, pytest.mark.kubectl]

STATE: dict[str, Any] = {
    "pods": [
        {"name": "echo", "labels": {"app": "echo"}, "ports": [
            {"containerPort": 5000, "name": "echo", "serve": "echo"},
            {"containerPort": 9000, "name": "blob", "serve": "blob"},
            {"containerPort": 7000, "name": "closed", "serve": "none"},
        ]},
    ],
    "services": [
        {"name": "echo-svc", "selector": {"app": "echo"}, "ports": [
            {"name": "named", "port": 80, "targetPort": "echo"},
            {"name": "numeric", "port": 5001, "targetPort": 5000},
        ]},
    ],
    "deployments": [
        {"name": "web", "replicas": 1,
         "template": {"labels": {"app": "web"},
                      "ports": [{"containerPort": 5000, "serve": "echo"}]}},
    ],
}

TRANSPORTS = [pytest.param(True, id="websocket"), pytest.param(False, id="spdy")]
MiB = 1 << 20


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


async def echo(host: str, port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read everything back until EOF."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            nursery.start_soon(send)
            chunks = []
            while data := await stream.receive_some(256 * 1024):
                chunks.append(data)
        return b"".join(chunks)
    finally:
        await stream.aclose()


@pytest.mark.parametrize("websockets", TRANSPORTS)
@pytest.mark.parametrize(("target", "port_arg", "remote"), [
    ("pod/echo", ":5000", 5000),
    ("pod/echo", ":echo", 5000),
    ("svc/echo-svc", ":80", 5000),        # named targetPort
    ("svc/echo-svc", ":5001", 5000),      # numeric targetPort
    ("deploy/web", ":5000", 5000),
])
async def test_echo_through_targets(sandbox: Sandbox, websockets: bool, target: str,
                                    port_arg: str, remote: int) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, target, port_arg,
                                    websockets=websockets) as fwd:
        (p,) = fwd.local_ports
        assert fwd.lines == [f"Forwarding from 127.0.0.1:{p} -> {remote}",
                             f"Forwarding from [::1]:{p} -> {remote}"]
        with trio.fail_after(10):
            assert await echo("127.0.0.1", p, b"hello sandbox") == b"hello sandbox"
            assert await fwd.next_line() == f"Handling connection for {p}"
            assert await echo("::1", p, b"over ipv6") == b"over ipv6"
            assert await fwd.next_line() == f"Handling connection for {p}"
    transport = "spdy-over-websocket" if websockets else "spdy"
    methods = [m for m, t in sandbox.api.requests if t.endswith("/portforward")]
    assert methods == (["GET"] if transport != "spdy" else ["POST"])


@pytest.mark.parametrize("websockets", TRANSPORTS)
@pytest.mark.parametrize("size", [8 * MiB, 64 * MiB], ids=["8MiB", "64MiB"])
async def test_blob_transfers_sha256(sandbox: Sandbox, websockets: bool, size: int) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo", ":9000",
                                    websockets=websockets) as fwd:
        (p,) = fwd.local_ports
        with trio.fail_after(60):
            # download: GET n → n deterministic bytes
            got = await echo("127.0.0.1", p, b"GET %d\n" % size)
            assert len(got) == size and hashlib.sha256(got).hexdigest() == blob_sha256(size)
            # upload: PUT n + n bytes → sha256 hex of what arrived
            data = os.urandom(size)
            reply = await echo("127.0.0.1", p, b"PUT %d\n" % size + data)
            assert reply == hashlib.sha256(data).hexdigest().encode() + b"\n"
            # upload until EOF: the client's half-close reaches the pod
            reply = await echo("127.0.0.1", p, b"PUT\n" + data[: MiB + 7])
            assert reply == hashlib.sha256(data[: MiB + 7]).hexdigest().encode() + b"\n"


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_fifty_concurrent_connections(sandbox: Sandbox, websockets: bool) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo", ":5000",
                                    websockets=websockets) as fwd:
        (p,) = fwd.local_ports
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            payload = hashlib.sha256(b"%d" % i).digest() * 2048 * (1 + i % 3)  # 64–192 KiB
            results[i] = await echo("127.0.0.1", p, payload)
            assert results[i] == payload

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
            handled = [await fwd.next_line() for _ in range(50)]
        assert len(results) == 50
        assert handled == [f"Handling connection for {p}"] * 50


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_kill_pod_ends_kubectl(sandbox: Sandbox, websockets: bool) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo", ":5000",
                                    websockets=websockets) as fwd:
        (p,) = fwd.local_ports
        assert await echo("127.0.0.1", p, b"x") == b"x"
        await sandbox.kill_pod("echo")
        status, _, err = await fwd.wait_exit()
        assert status == 1
        assert err.splitlines()[-1] == "error: lost connection to pod"
    assert "echo" not in {name for _, name in sandbox.state.pods}


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_refused_port_kubelet_text(sandbox: Sandbox, websockets: bool) -> None:
    """A closed pod port: the kubelet's error text ends the whole port-forward (§13.1)."""
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo", ":7000",
                                    websockets=websockets) as fwd:
        (p,) = fwd.local_ports
        assert await echo("127.0.0.1", p, b"x") == b""
        status, _, err = await fwd.wait_exit()
        assert status == 1
        text = dial_error_text(sandbox.pod("echo"), 7000)
        klog_quoted = text.replace('"', '\\"')  # klog escapes quotes inside err="…"
        assert f'err="an error occurred forwarding {p} -> 7000: {klog_quoted}"' in err
        assert err.splitlines()[-1] == "error: lost connection to pod"


async def test_pod_not_running(sandbox: Sandbox) -> None:
    from pfcompose.sandbox.pytest_plugin import run_kubectl

    sandbox.set_phase("echo", "Pending")
    r = await run_kubectl(sandbox.kubeconfig_path, "port-forward", "pod/echo", ":5000")
    assert r.returncode == 1
    assert r.stderr == (b"error: unable to forward port because pod is not running. "
                        b"Current status=Pending\n")


async def test_kubectl_waits_for_a_pod_through_watch(sandbox: Sandbox) -> None:
    """No pod behind the service yet: kubectl watches from the list's resourceVersion."""
    from pfcompose.sandbox.state import Behaviour, ContainerPort, Pod, Service, ServicePort

    sandbox.state.add_service(Service("later", selector={"app": "later"},
                                      ports=[ServicePort(80, 5000)]))

    async def add_pod_once_watched() -> None:
        target = await sandbox.api.wait_for_request(lambda _, t: "watch=true" in t)
        assert "labelSelector=app%3Dlater&resourceVersion=" in target
        await sandbox.add_pod(Pod("later-1", labels={"app": "later"},
                                  ports=[ContainerPort(5000, serve=Behaviour("echo"))]))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_pod_once_watched)
            async with kubectl_port_forward(sandbox.kubeconfig_path, "svc/later", ":80") as fwd:
                (p,) = fwd.local_ports
                assert await echo("127.0.0.1", p, b"late") == b"late"


@pytest.mark.parametrize("websockets", TRANSPORTS)
async def test_tls_client_cert_and_token(websockets: bool) -> None:
    async with (
        run_sandbox(State.from_dict(STATE), tls=True, require_client_cert=True,
                    token="t") as sb,
        kubectl_port_forward(sb.kubeconfig_path, "svc/echo-svc", ":named",
                             websockets=websockets) as fwd,
    ):
        (p,) = fwd.local_ports
        assert fwd.lines[0] == f"Forwarding from 127.0.0.1:{p} -> 5000"
        assert await echo("127.0.0.1", p, b"over tls") == b"over tls"
