"""Proxies (issue 12 §1): pfcompose and kubectl side by side through the sandbox's proxy.

Every kind (http, https, socks5), with and without credentials; the proxy's counters
prove both went through it, the echo proves the bytes arrived. Also the environment
(HTTP_PROXY, NO_PROXY) and a proxy that refuses, closes or strips Upgrade.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from uphelp import echo_round_trip, local_port, running_up

from pfcompose.config import ForwardSpec
from pfcompose.kube import ClusterAccess
from pfcompose.kube.kubeconfig import load_access_sync
from pfcompose.sandbox.kubeconfig import kubeconfig_dict
from pfcompose.sandbox.pytest_plugin import (
    DEFAULT_STATE,
    kubectl_port_forward,
    requires_kubectl,
    run_kubectl,
)
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.up.events import Kind

FILE = "forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n"
AUTO = "forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n    transport: auto\n"
PASSWORD = "s3cr:t@x"  # characters that must be escaped in the URL


def _state() -> State:
    return State.from_dict(DEFAULT_STATE)


def _portforwards(sb: Sandbox) -> list[str]:
    """The portforward requests the API server saw: 'GET' (tunnel) or 'POST' (SPDY)."""
    return [m for m, target in sb.api.requests if target.endswith("/portforward")]


@pytest.mark.kubectl
@requires_kubectl
@pytest.mark.parametrize("auth", [False, True], ids=["open", "auth"])
@pytest.mark.parametrize("kind", ["http", "https", "socks5"])
async def test_pfcompose_and_kubectl_through_the_same_proxy(
    tmp_path: Path, kind: str, auth: bool
) -> None:
    user, password = ("alice", PASSWORD) if auth else (None, None)
    async with run_sandbox(_state(), proxy=kind, proxy_user=user, proxy_password=password) as sb:
        proxy = sb.proxy
        assert proxy is not None
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        assert config["clusters"][0]["cluster"]["proxy-url"] == proxy.url()
        async with running_up(sb, tmp_path, AUTO) as (supervisor, events):
            ready = await events.ready("e")
            ours = proxy.counters.tunnels + proxy.counters.forwarded
            assert ours >= 2  # the pod lookup and the upgrade
            port = local_port(supervisor, "e")
            assert await echo_round_trip(port, b"pfcompose via proxy") == b"pfcompose via proxy"
            assert "via spdy-over-websocket" in ready.message

            mark = len(_portforwards(sb))
            async with kubectl_port_forward(sb.kubeconfig_path, "pod/echo", ":5000") as fwd:
                assert proxy.counters.tunnels + proxy.counters.forwarded > ours
                payload = os.urandom(256 * 1024)
                got = await echo_round_trip(fwd.local_ports[0], payload)
                assert got == payload
                # kubectl 1.32 through an https proxy: gorilla's dialer knows no https
                # proxies ("proxy: unknown scheme: https"), so its fallback dialer goes to
                # SPDY (IsHTTPSProxyError); through the others it keeps the tunnel.
                kubectl_upgrades = _portforwards(sb)[mark:]
                assert kubectl_upgrades == (["POST"] if kind == "https" else ["GET"])
            # both side by side, still through the proxy
            assert await echo_round_trip(port, b"still here") == b"still here"
        assert proxy.counters.auth_failures == 0
        text = "\n".join(e.message for e in events.events)
        if password:
            assert password not in text and "s3cr" not in text


async def test_wrong_proxy_password_is_one_line_without_the_password(tmp_path: Path) -> None:
    async with run_sandbox(_state(), proxy="http", proxy_user="alice",
                           proxy_password="right") as sb:
        assert sb.proxy is not None
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        url = sb.proxy.url().replace("right", "wrong-pw")
        config["clusters"][0]["cluster"]["proxy-url"] = url
        sb.kubeconfig_path.write_text(yaml.safe_dump(config))
        async with running_up(sb, tmp_path, FILE) as (_, events):
            event = await events.wait_for(lambda e: e.kind is Kind.ERROR)
        assert "wrong-pw" not in event.message
        assert event.message.count("\n") == 0
        assert f"proxy http://alice:xxxxx@127.0.0.1:{sb.proxy.port}" in event.message
        assert "407 Proxy Authentication Required" in event.message
        assert sb.proxy.counters.auth_failures >= 1


def _env_loader(kubeconfig: Path, env: dict[str, str]) -> Callable[[ForwardSpec], Any]:
    async def load(spec: ForwardSpec) -> ClusterAccess:
        return await trio.to_thread.run_sync(
            partial(load_access_sync, str(kubeconfig), None, environ=env))

    return load


@pytest.mark.kubectl
@requires_kubectl
async def test_http_proxy_from_the_environment(tmp_path: Path) -> None:
    """No proxy-url: HTTP_PROXY is used for a name that only the proxy resolves (it is
    not loopback, which Go never proxies); kubectl does the same with the same env."""
    async with run_sandbox(_state(), proxy="http") as sb:
        assert sb.proxy is not None
        kubeconfig = tmp_path / "kubeconfig"
        server = f"http://pfcompose-sandbox.test:{sb.port}"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(server)))
        env = {"HTTP_PROXY": sb.proxy.url(), "NO_PROXY": "example.com,10.0.0.0/8"}
        async with running_up(sb, tmp_path, FILE, loader=_env_loader(kubeconfig, env)) as (
            supervisor,
            events,
        ):
            await events.ready("e")
            assert await echo_round_trip(local_port(supervisor, "e"), b"env") == b"env"
            ours = sb.proxy.counters.tunnels + sb.proxy.counters.forwarded
            assert ours >= 2
            async with kubectl_port_forward(kubeconfig, "pod/echo", ":5000", env=env) as fwd:
                assert await echo_round_trip(fwd.local_ports[0], b"kubectl env") == b"kubectl env"
            assert sb.proxy.counters.tunnels + sb.proxy.counters.forwarded > ours


async def test_no_proxy_sends_the_name_direct(tmp_path: Path) -> None:
    """NO_PROXY names the server: no proxy, so the unresolvable name fails, in one line."""
    async with run_sandbox(_state(), proxy="http") as sb:
        assert sb.proxy is not None
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(f"http://pfcompose-sandbox.test:{sb.port}")))
        env = {"HTTP_PROXY": sb.proxy.url(), "NO_PROXY": ".test"}
        access = load_access_sync(str(kubeconfig), None, environ=env)
        assert access.endpoint.proxy is None
        env = {"HTTP_PROXY": sb.proxy.url(), "NO_PROXY": "other.test"}
        access = load_access_sync(str(kubeconfig), None, environ=env)
        assert access.endpoint.proxy is not None


PATH = "/api/v1/namespaces/default/pods/echo/portforward"


@pytest.mark.parametrize("kind", ["http", "https", "socks5"])
@pytest.mark.parametrize(
    ("fault", "answer"),
    [
        ("refuse-403", {"http": "refused CONNECT", "socks5": "did not open a tunnel"}),
        ("refuse-407", {"http": "407 Proxy Authentication Required",
                        "socks5": "did not open a tunnel"}),
        ("close", {"http": "closed the connection during CONNECT",
                   "socks5": "did not open a tunnel"}),
    ],
)
async def test_auto_falls_back_when_the_proxy_breaks_the_first_tunnel(
    kind: str, fault: str, answer: dict[str, str]
) -> None:
    """The WebSocket upgrade's tunnel is refused or cut mid-handshake: ``auto`` goes on
    with SPDY (kubectl: IsUpgradeFailure || IsHTTPSProxyError), says why in one line
    naming the proxy, and uses SPDY for that endpoint from then on."""
    from pfcompose.wire import dial

    async with run_sandbox(_state(), proxy=kind) as sb:
        proxy = sb.proxy
        assert proxy is not None
        access = load_access_sync(str(sb.kubeconfig_path), None, environ={})
        endpoint = access.endpoint
        dial.forget_learned()
        proxy.set_fault(fault, times=1)
        stream, used = await dial.dial_spdy(endpoint, PATH, "auto")
        await stream.aclose()
        assert used == "spdy"
        reason = dial.fallback_reason(endpoint)
        assert reason is not None and "\n" not in reason
        assert f"proxy {kind}://127.0.0.1:{proxy.port}" in reason
        assert answer["socks5" if kind == "socks5" else "http"] in reason
        # remembered: the next dial goes straight to SPDY, no second tunnel attempt
        tunnels = proxy.counters.tunnels
        stream, used = await dial.dial_spdy(endpoint, PATH, "auto")
        await stream.aclose()
        assert used == "spdy" and proxy.counters.tunnels == tunnels + 1
        dial.forget_learned()


async def test_a_proxy_that_refuses_everything_is_one_line(tmp_path: Path) -> None:
    async with run_sandbox(_state(), proxy="https", proxy_user="bob",
                           proxy_password="hunter2") as sb:
        assert sb.proxy is not None
        sb.proxy.set_fault("refuse-403")
        async with running_up(sb, tmp_path, FILE) as (_, events):
            event = await events.wait_for(lambda e: e.kind is Kind.ERROR)
        assert event.message.count("\n") == 0 and "hunter2" not in event.message
        assert f"proxy https://bob:xxxxx@127.0.0.1:{sb.proxy.port} refused CONNECT" in (
            event.message)
        assert "403 Forbidden" in event.message


@pytest.mark.kubectl
@requires_kubectl
async def test_auto_falls_back_when_the_proxy_strips_websocket_upgrades(tmp_path: Path) -> None:
    """An inspecting proxy drops ``Upgrade: websocket``: the API server sees a plain GET
    and answers 400; pfcompose's auto and kubectl both go on with SPDY."""
    async with run_sandbox(_state(), proxy="http", proxy_user="alice",
                           proxy_password=PASSWORD) as sb:
        proxy = sb.proxy
        assert proxy is not None
        proxy.set_fault("strip-websocket")
        async with running_up(sb, tmp_path, AUTO) as (supervisor, events):
            ready = await events.ready("e")
            assert "via spdy" in ready.message
            assert proxy.counters.stripped >= 1
            note = ready.data.get("fallback")
            # the server's answer, and the proxy it came back through (no password)
            assert note == (f"websocket tunnel through proxy http://alice:xxxxx@127.0.0.1:"
                            f"{proxy.port} failed (400: Upgrade request required)"), note
            assert PASSWORD not in ready.message and "s3cr" not in ready.message
            status = next(s for s in supervisor.statuses if s.name == "e")
            assert status.fallback == note  # what `ps --format json` shows
            assert await echo_round_trip(local_port(supervisor, "e"), b"x") == b"x"
            stripped, mark = proxy.counters.stripped, len(_portforwards(sb))
            async with kubectl_port_forward(sb.kubeconfig_path, "pod/echo", ":5000") as fwd:
                assert await echo_round_trip(fwd.local_ports[0], b"k") == b"k"
            assert proxy.counters.stripped == stripped + 1
            assert _portforwards(sb)[mark:] == ["GET", "POST"]


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_socks_names_only_the_proxy_can_resolve(
    tmp_path: Path, scheme: str, transport: str
) -> None:
    """socks5 and socks5h: the proxy resolves the server's name (Go's dialer sends the
    name whatever the scheme), so a name only the far side knows works."""
    async with run_sandbox(_state(), proxy="socks5") as sb:
        assert sb.proxy is not None
        kubeconfig = tmp_path / "kubeconfig"
        config = kubeconfig_dict(f"http://pfcompose-sandbox.test:{sb.port}",
                                 proxy_url=sb.proxy.url().replace("socks5", scheme, 1))
        kubeconfig.write_text(yaml.safe_dump(config))
        text = FILE + f"    transport: {transport}\n"
        async with running_up(sb, tmp_path, text, loader=_env_loader(kubeconfig, {})) as (
            supervisor,
            events,
        ):
            await events.ready("e")
            port = local_port(supervisor, "e")
            half = transport != "websocket"
            assert await echo_round_trip(port, b"by name", half_close=half) == b"by name"
        assert sb.proxy.counters.remote_dns >= 2  # the pod lookup and the upgrade(s)


@pytest.mark.kubectl
@requires_kubectl
async def test_socks5_lets_the_proxy_resolve_a_name_as_kubectl_does(tmp_path: Path) -> None:
    """A name this machine resolves too (``localhost``): kubectl sends it to a socks5://
    proxy as a name, every tunnel (split-horizon DNS behind a jump host relies on it);
    so does pfcompose. An IP is sent as an IP."""
    async with run_sandbox(_state(), proxy="socks5") as sb:
        proxy = sb.proxy
        assert proxy is not None
        proxy.aliases["localhost"] = "127.0.0.1"  # what the far side's DNS says
        kubeconfig = tmp_path / "kubeconfig"
        config = kubeconfig_dict(f"http://localhost:{sb.port}", proxy_url=proxy.url())
        kubeconfig.write_text(yaml.safe_dump(config))
        result = await run_kubectl(kubeconfig, "get", "pods", "-o", "name")
        assert b"pod/echo" in result.stdout, result.stderr
        assert proxy.counters.tunnels >= 1
        assert proxy.counters.remote_dns == proxy.counters.tunnels  # kubectl: names only
        mark = proxy.counters.tunnels
        async with running_up(sb, tmp_path, FILE, loader=_env_loader(kubeconfig, {})) as (
            supervisor,
            events,
        ):
            await events.ready("e")
            assert await echo_round_trip(local_port(supervisor, "e"), b"n") == b"n"
        ours = proxy.counters.tunnels - mark
        assert ours >= 2 and proxy.counters.remote_dns == proxy.counters.tunnels
        # the sandbox's own kubeconfig names 127.0.0.1: sent as an address, no lookup
        tunnels, dns = proxy.counters.tunnels, proxy.counters.remote_dns
        async with running_up(sb, tmp_path, FILE) as (_, events):
            await events.ready("e")
        assert proxy.counters.tunnels >= tunnels + 2 and proxy.counters.remote_dns == dns


@pytest.mark.parametrize("scheme", ["http", "https", "socks5"])
async def test_an_unreachable_proxy_is_one_line(scheme: str) -> None:
    from pfcompose.wire.endpoint import Endpoint, open_transport
    from pfcompose.wire.proxy import ProxyError, parse_proxy_url

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    proxy = parse_proxy_url(f"{scheme}://u:secret@127.0.0.1:{port}")
    with pytest.raises(ProxyError) as info:
        await open_transport(Endpoint("127.0.0.1", 1, proxy=proxy))
    message = str(info.value)
    assert message == f"cannot reach proxy {scheme}://u:xxxxx@127.0.0.1:{port}: Connection refused"
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("transport", "fault"),
    [("spdy", "strip-upgrade"), ("websocket", "strip-upgrade"),
     ("spdy-over-websocket", "strip-websocket")],
)  # fmt: skip
async def test_a_proxy_that_strips_upgrade_is_named_on_every_transport(
    tmp_path: Path, transport: str, fault: str
) -> None:
    """Without auto's fallback the refusal is the forward's error: one line that names
    the proxy it came back through (redacted) beside the server's answer."""
    async with run_sandbox(_state(), proxy="http", proxy_user="alice",
                           proxy_password=PASSWORD) as sb:
        assert sb.proxy is not None
        sb.proxy.set_fault(fault)
        text = FILE + f"    transport: {transport}\n"
        async with running_up(sb, tmp_path, text) as (_, events):
            # websocket: its readiness probe is the first upgrade, refused the same way
            event = await events.wait_for(lambda e: e.kind is Kind.ERROR)
        assert sb.proxy.counters.stripped >= 1
        message = event.message
        assert message.count("\n") == 0 and PASSWORD not in message, message
        assert f"through proxy http://alice:xxxxx@127.0.0.1:{sb.proxy.port}" in message, message
        assert "Upgrade request required" in message, message
