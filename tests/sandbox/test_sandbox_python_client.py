"""The official Python client (kubernetes.stream.portforward) over the channel protocol (§5)."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
import trio
from kubernetes import client, config
from kubernetes.stream import portforward

from pfcompose.sandbox.backends import blob_sha256
from pfcompose.sandbox.kubelet import dial_error_text
from pfcompose.sandbox.server import Sandbox
from pfcompose.wire.endpoint import open_transport
from pfcompose.wire.upgrade_client import upgrade_channel_websocket

STATE: dict[str, Any] = {
    "pods": [{"name": "p", "labels": {"app": "p"}, "ports": [
        {"containerPort": 5000, "serve": "echo"},
        {"containerPort": 9000, "serve": "blob"},
        {"containerPort": 7000, "serve": "none"},
    ]}],
}


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


def _recv_exactly(sock: Any, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        data = sock.recv(min(1 << 20, n - got))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def _python_client_session(kubeconfig: str) -> tuple[bytes, str, str | None]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    api = client.CoreV1Api(client.ApiClient(cfg))
    pf = portforward(api.connect_get_namespaced_pod_portforward, "p", "default",
                     ports="5000,9000,7000")
    try:
        echo = pf.socket(5000)
        echo.settimeout(10)
        echo.sendall(b"hello channel")
        echoed = _recv_exactly(echo, len(b"hello channel"))
        blob = pf.socket(9000)
        blob.settimeout(10)
        blob.sendall(b"GET 1048576\n")
        digest = hashlib.sha256(_recv_exactly(blob, 1 << 20)).hexdigest()
        refused = pf.socket(7000)
        refused.settimeout(10)
        with contextlib.suppress(TimeoutError, OSError):
            refused.recv(1)  # the client closes this socket when error text arrives
        return echoed, digest, pf.error(7000)
    finally:
        pf.close()


async def test_kubernetes_python_client(sandbox: Sandbox) -> None:
    with trio.fail_after(30):
        echoed, digest, error = await trio.to_thread.run_sync(
            _python_client_session, str(sandbox.kubeconfig_path))
    assert echoed == b"hello channel"
    assert digest == blob_sha256(1 << 20)
    assert error == dial_error_text(sandbox.pod("p"), 7000)


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"])
async def test_channel_preamble_and_framing(sandbox: Sandbox, protocol: str) -> None:
    transport = await open_transport(sandbox.endpoint)
    ws, chosen = await upgrade_channel_websocket(
        transport, sandbox.endpoint,
        "/api/v1/namespaces/default/pods/p/portforward?ports=5000,7000", (protocol,))
    try:
        assert chosen == protocol
        with trio.fail_after(5):
            first = [await ws.receive_message() for _ in range(4)]
            if protocol.startswith("v4.base64"):
                assert first == ["0iBM=", "1iBM=", "2WBs=", "3WBs="]
                await ws.send_message("0" + "aGk=")  # "hi"
                rest = {await ws.receive_message() for _ in range(2)}  # any order
                assert rest == {"0aGk=",
                                "3" + _b64(dial_error_text(sandbox.pod("p"), 7000).encode())}
            else:
                assert first == [b"\x00\x88\x13", b"\x01\x88\x13", b"\x02\x58\x1b",
                                 b"\x03\x58\x1b"]
                await ws.send_message(b"\x00hi")
                rest = {await ws.receive_message() for _ in range(2)}  # any order
                assert rest == {b"\x00hi",
                                b"\x03" + dial_error_text(sandbox.pod("p"), 7000).encode()}
    finally:
        await ws.aclose()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()



