"""State files, --from synthesis, and the pods' processes (echo, http, blob, target, none)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from pfcompose.config.selector import matches, parse_selector
from pfcompose.sandbox.backends import BLOB_BLOCK, blob_bytes, blob_mismatch, blob_sha256
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import Pod, State, StateError, state_from_plan


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    path.write_text("""
namespaces: [shop]
pods:
  - name: web-1
    namespace: shop
    labels: {app: web}
    phase: Pending
    ready: false
    creationTimestamp: "2024-05-01T10:00:00Z"
    containers:
      - name: app
        ports:
          - {containerPort: 8080, name: http, serve: http}
          - {containerPort: 53, protocol: UDP}
      - name: sidecar
        ports: [{containerPort: 9000, serve: {target: "127.0.0.1:5432"}}]
services:
  - {name: web, namespace: shop, selector: {app: web}, clusterIP: None,
     ports: [{port: 80, targetPort: http}]}
statefulsets:
  - {name: db, namespace: shop, replicas: 2, template: {labels: {app: db}, ports: [5432]}}
""")
    state = State.load(path)
    pod = state.pods[("shop", "web-1")]
    assert (pod.phase, pod.ready, pod.created.isoformat()) == (
        "Pending", False, "2024-05-01T10:00:00+00:00")
    assert [(p.container_port, p.name, p.protocol, p.serve.kind, p.container)
            for p in pod.ports] == [(8080, "http", "TCP", "http", "app"),
                                    (53, None, "UDP", "http", "app"),
                                    (9000, None, "TCP", "target", "sidecar")]
    assert state.services[("shop", "web")].cluster_ip == "None"
    assert sorted(n for ns, n in state.pods if n.startswith("db")) == ["db-0", "db-1"]
    assert state.pods[("shop", "db-0")].owner == ("StatefulSet", "db")


@pytest.mark.parametrize(("text", "message"), [
    ("pods: [{labels: {}}]", "pods[0]: name is required"),
    ("pods: [{name: a, ports: [{containerPort: 0}]}]",
     "pods[0].containers[0].ports[0]: containerPort must be 1-65535"),
    ("pods: [{name: a, ports: [{containerPort: 1, serve: magic}]}]",
     "pods[0].containers[0].ports[0].serve: unknown behaviour 'magic'"),
    ("deployments: [{name: d}]", "deployments[0]: selector (or template.labels) is required"),
    ("nodes: []", "unknown key 'nodes'"),
])
def test_state_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(StateError) as info:
        State.load(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_state_from_plan_satisfies_selectors_and_named_ports() -> None:
    from pfcompose.config import load_plan

    root = Path(__file__).resolve().parents[2] / "forwards.example.yaml"
    if not root.exists():
        pytest.skip("forwards.example.yaml is not there")
    plan = load_plan([root])
    state = state_from_plan(plan.forwards.values())
    for spec in plan.forwards.values():
        ns = spec.namespace or "default"
        if spec.selector:
            reqs = parse_selector(spec.selector)
            assert [p for p in state.list_pods(ns) if matches(reqs, p.labels)], spec.name
    api = state.services[("shop", "api")]
    named = next(p for p in api.ports if p.name == "http")
    assert named.target_port == "http"
    pod = state.list_pods("shop", "app.kubernetes.io/name=api")[0]
    assert pod.port(next(p.container_port for p in pod.ports if p.name == "http")) is not None


def test_blob_mismatch_finds_the_first_wrong_byte() -> None:
    period = 1 << 20
    data = bytearray(blob_bytes(3 * period))
    assert blob_mismatch(data, 0) is None
    assert blob_mismatch(memoryview(data)[5:period + 9], 5) is None  # any phase, any length
    assert blob_mismatch(data[period - 3:], period - 3) is None
    assert blob_mismatch(data, 1) == 0  # shifted by one
    data[2 * period + 17] = data[2 * period + 17] ^ 0x80
    assert blob_mismatch(data, 0) == 2 * period + 17
    assert blob_mismatch(data[period:], period) == period + 17


def test_blob_data_is_deterministic() -> None:
    assert len(BLOB_BLOCK) == 1 << 20
    assert BLOB_BLOCK[:32] == hashlib.sha256(b"pfcompose-blob:0").digest()
    n = (1 << 20) * 2 + 12345
    assert hashlib.sha256(blob_bytes(n)).hexdigest() == blob_sha256(n)


async def talk(address: tuple[str, int], payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    try:
        await stream.send_all(payload)
        await stream.send_eof()
        out = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(1 << 20):
                out += data
        return out
    finally:
        await stream.aclose()


async def test_backends_behaviours() -> None:
    target = await trio.open_tcp_listeners(0, host="127.0.0.1")
    target_port = target[0].socket.getsockname()[1]
    state = State.from_dict({"pods": [{"name": "p", "ports": [
        {"containerPort": 1, "serve": "echo"},
        {"containerPort": 2, "serve": "http"},
        {"containerPort": 3, "serve": "blob"},
        {"containerPort": 4, "serve": "none"},
        {"containerPort": 5, "serve": {"target": f"127.0.0.1:{target_port}"}},
    ]}]})
    async with run_sandbox(state) as sb:
        pod = sb.pod("p")
        addr = {n: sb.backends.address(pod, n) for n in range(1, 7)}
        assert addr[4] is None and addr[6] is None  # nothing listens: the kubelet's dial fails
        assert addr[5] == ("127.0.0.1", target_port)
        assert addr[1] is not None and addr[2] is not None and addr[3] is not None
        assert await talk(addr[1], b"echo me") == b"echo me"
        http = await talk(addr[2], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http.startswith(b"HTTP/1.1 200 ")
        assert http.endswith(b"\r\n\r\npfcompose sandbox: pod p namespace default port 2\n")
        # not HTTP: a 400 and a hang-up, as a web server answers, and the app goes on
        assert (await talk(addr[2], b"\x16\x03\x01garbage\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        assert (await talk(addr[2], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
            b"HTTP/1.1 200 ")
        assert await talk(addr[3], b"GET 100\n") == blob_bytes(100)
        assert await talk(addr[3], b"PUT 3\nabcdef") == hashlib.sha256(b"abc").hexdigest(
        ).encode() + b"\n"
        assert await talk(addr[3], b"PUT\nabcdef") == hashlib.sha256(b"abcdef").hexdigest(
        ).encode() + b"\n"
        assert await talk(addr[3], b"PUT 10\nabc") == b"ERR short upload\n"
        assert await talk(addr[3], b"HELLO\n") == b"ERR expected PUT <n>, VERIFY <n> or GET <n>\n"
        assert await talk(addr[3], b"VERIFY\n") == b"ERR expected PUT <n>, VERIFY <n> or GET <n>\n"
        # VERIFY: byte-exact against the pattern, across the 1 MiB period and read boundaries
        n = 3 * (1 << 20) + 12345
        good = blob_bytes(n)
        assert await talk(addr[3], b"VERIFY %d\n" % n + good) == b"ok %d\n" % n
        assert await talk(addr[3], b"VERIFY 0\n") == b"ok 0\n"
        for at in (0, 31, (1 << 20) - 1, 1 << 20, 2 * (1 << 20) + 7, n - 1):
            bad = bytearray(good)
            bad[at] ^= 0x01
            assert await talk(addr[3], b"VERIFY %d\n" % n + bad) == b"mismatch at %d\n" % at
        swapped = bytearray(good)  # same bytes, same length, two of them swapped
        swapped[100], swapped[101] = swapped[101], swapped[100]
        assert swapped != good
        assert await talk(addr[3], b"VERIFY %d\n" % n + swapped) == b"mismatch at 100\n"
        assert await talk(addr[3], b"VERIFY %d\n" % n + good[:-1]) == b"ERR short upload\n"
        # a stream that starts one byte late: the first byte already differs
        assert await talk(addr[3], b"VERIFY 100\n" + good[1:101]) == b"mismatch at 0\n"
    await target[0].aclose()


async def test_reset_sends_rst_and_kill_closes_listeners(sandbox: Sandbox) -> None:
    pod = sandbox.pod("echo")
    address = sandbox.backends.address(pod, 5000)
    assert address is not None
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(b"x")
    assert await stream.receive_some() == b"x"
    assert sandbox.reset_pod_connections("echo") == 1
    with pytest.raises(trio.BrokenResourceError):  # ECONNRESET, not a clean EOF
        with trio.fail_after(5):
            await stream.receive_some()
    await stream.aclose()
    await sandbox.kill_pod("echo")
    with pytest.raises(OSError):
        await trio.open_tcp_stream(*address)


async def test_add_pod_starts_its_processes(sandbox: Sandbox) -> None:
    from pfcompose.sandbox.state import ContainerPort

    pod = await sandbox.add_pod(Pod("late", labels={"app": "late"},
                                    ports=[ContainerPort(1234)]))
    address = sandbox.backends.address(pod, 1234)
    assert address is not None
    assert (await talk(address, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
