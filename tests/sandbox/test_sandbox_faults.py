"""Every fault, shown on the wire (pfcompose's SPDY client) and on kubectl."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio

from pfcompose.sandbox.kubelet import dial_error_text
from pfcompose.sandbox.pytest_plugin import kubectl_port_forward, requires_kubectl, run_kubectl
from pfcompose.sandbox.server import Sandbox
from pfcompose.wire.endpoint import open_transport
from pfcompose.wire.http import http_request, http_stream
from pfcompose.wire.session import SessionLost, SpdySession, SpdyStream, StreamReset, open_session
from pfcompose.wire.upgrade_client import upgrade_spdy, upgrade_spdy_over_websocket

STATE: dict[str, Any] = {
    "pods": [
        {"name": "echo-1", "labels": {"app": "echo"}, "ports": [
            {"containerPort": 5000, "name": "echo", "serve": "echo"},
            {"containerPort": 7000, "serve": "none"},
        ]},
    ],
    "services": [{"name": "echo", "selector": {"app": "echo"},
                  "ports": [{"port": 80, "targetPort": "echo"}]}],
}


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


@asynccontextmanager
async def session_to(sb: Sandbox, pod: str, *, tunnel: bool = False
                     ) -> AsyncIterator[SpdySession]:
    transport = await open_transport(sb.endpoint)
    path = f"/api/v1/namespaces/default/pods/{pod}/portforward"
    stream: trio.abc.Stream
    if tunnel:
        stream, _ = await upgrade_spdy_over_websocket(transport, sb.endpoint, path)
    else:
        stream, _ = await upgrade_spdy(transport, sb.endpoint, path)
    async with open_session(stream, "client") as session:
        yield session


async def open_pair(session: SpdySession, port: int, request_id: str
                    ) -> tuple[SpdyStream, SpdyStream]:
    """client-go's order: error stream, its reply, FIN on it, then the data stream."""
    headers = {"streamtype": "error", "port": str(port), "requestid": request_id}
    error = await session.open_stream(headers)
    await error.send_eof()
    data = await session.open_stream({**headers, "streamtype": "data"})
    return error, data


async def read_all(stream: SpdyStream) -> bytes:
    chunks = []
    while data := await stream.receive_some():
        chunks.append(data)
    return b"".join(chunks)


async def test_pair_echo_and_fin_on_both(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        error, data = await open_pair(session, 5000, "0")
        await data.send_all(b"ping")
        await data.send_eof()
        with trio.fail_after(5):
            assert await read_all(data) == b"ping"
            assert await read_all(error) == b""  # FIN, no text: success


async def test_refused_port_error_text_on_the_error_stream(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1", tunnel=True) as session:
        error, data = await open_pair(session, 7000, "0")
        with trio.fail_after(5):
            assert (await read_all(error)).decode() == dial_error_text(sandbox.pod("echo-1"), 7000)
            assert await read_all(data) == b""


async def test_invalid_stream_headers_are_reset(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        for headers in ({"streamtype": "error"},  # no port
                        {"streamtype": "error", "port": "0"},
                        {"streamtype": "error", "port": "http"},
                        {"port": "5000"},
                        {"streamtype": "bogus", "port": "5000"}):
            with pytest.raises(StreamReset):
                await session.open_stream(headers)
        await open_pair(session, 5000, "1")  # the session is still fine


async def test_duplicate_stream_text(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        headers = {"streamtype": "error", "port": "5000", "requestid": "3"}
        error = await session.open_stream(headers)
        await session.open_stream(headers)  # replied, then reported, left unused (§9.2)
        with trio.fail_after(5):
            assert await error.receive_some() == (
                b"error processing stream for request 3: error stream already assigned")


async def test_pairing_by_stream_id_without_requestid(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        error = await session.open_stream({"streamtype": "error", "port": "5000"})
        data = await session.open_stream({"streamtype": "data", "port": "5000"})
        assert data.stream_id == error.stream_id + 2
        await data.send_all(b"old client")
        await data.send_eof()
        with trio.fail_after(5):
            assert await read_all(data) == b"old client"


async def test_kill_pod_resets_streams_and_ends_session(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        _error, data = await open_pair(session, 5000, "0")
        await data.send_all(b"x")
        assert await data.receive_some() == b"x"
        await sandbox.kill_pod("echo-1")
        with trio.fail_after(5):
            with pytest.raises(StreamReset):
                await data.receive_some()
            await session.wait_closed()
        assert ("default", "echo-1") not in sandbox.state.pods


async def test_reset_pod_connections_rst_without_text(sandbox: Sandbox) -> None:
    """The app crashed: RST on both streams, no error text, the session survives."""
    async with session_to(sandbox, "echo-1") as session:
        error, data = await open_pair(session, 5000, "0")
        await data.send_all(b"x")
        assert await data.receive_some() == b"x"
        assert sandbox.reset_pod_connections("echo-1") == 1
        with trio.fail_after(5):
            with pytest.raises(StreamReset):
                await data.receive_some()
            with pytest.raises(StreamReset):
                await error.receive_some()
        error, data = await open_pair(session, 5000, "1")
        await data.send_all(b"still here")
        assert await data.receive_some() == b"still here"


async def test_refuse_and_delay_streams(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1") as session:
        sandbox.refuse_streams(True)
        with pytest.raises(StreamReset):
            await session.open_stream({"streamtype": "error", "port": "5000", "requestid": "0"})
        sandbox.refuse_streams(False)
        sandbox.delay_streams(0.3)
        start = trio.current_time()
        await open_pair(session, 5000, "1")
        assert trio.current_time() - start >= 0.6  # two streams, each replied 0.3 s late
        sandbox.delay_streams(0)


async def test_drop_upgraded_connections(sandbox: Sandbox) -> None:
    async with session_to(sandbox, "echo-1", tunnel=True) as s1, \
            session_to(sandbox, "echo-1") as s2:
        _, data = await open_pair(s1, 5000, "0")
        assert sandbox.drop_upgraded_connections() == 2
        with trio.fail_after(5):
            await s1.wait_closed()
            await s2.wait_closed()
            with pytest.raises((SessionLost, StreamReset)):
                await data.receive_some()


async def test_pair_timeout_text(sandbox: Sandbox, autojump_clock: trio.testing.MockClock
                                 ) -> None:
    """A lone error stream gets the kubelet's timeout text after 30 s (§7.2)."""
    async with session_to(sandbox, "echo-1") as session:
        error = await session.open_stream({"streamtype": "error", "port": "5000",
                                           "requestid": "7"})
        with trio.fail_after(60):
            text = (await error.receive_some()).decode()
        assert text.startswith("(conn=0x") and text.endswith(
            ", request=7) timed out waiting for streams")


# -- objects -----------------------------------------------------------------------


async def pod_json(sb: Sandbox, name: str) -> tuple[int, Any]:
    transport = await open_transport(sb.endpoint)
    try:
        response, body = await http_request(transport, sb.endpoint, "GET",
                                            f"/api/v1/namespaces/default/pods/{name}")
    finally:
        await transport.aclose()
    return response.status_code, json.loads(body)


async def test_replace_pod_rollout(sandbox: Sandbox) -> None:
    transport = await open_transport(sandbox.endpoint)
    try:
        rv = sandbox.state.resource_version
        async with http_stream(transport, sandbox.endpoint, "GET",
                               f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
                               ) as (_, lines):
            new = await sandbox.replace_pod("echo-1", grace=0.2)
            assert new != "echo-1" and new.startswith("echo-")
            _, old = await pod_json(sandbox, "echo-1")
            assert "deletionTimestamp" in old["metadata"]
            assert {c["type"]: c["status"] for c in old["status"]["conditions"]}["Ready"] == "False"
            _, fresh = await pod_json(sandbox, new)
            assert fresh["metadata"]["labels"] == {"app": "echo"}
            assert fresh["status"]["phase"] == "Running"
            seen = []
            with trio.fail_after(5):
                async for line in lines:
                    event = json.loads(line)
                    seen.append((event["type"], event["object"]["metadata"]["name"]))
                    if event["type"] == "DELETED":
                        break
            assert seen == [("ADDED", new), ("MODIFIED", "echo-1"), ("DELETED", "echo-1")]
    finally:
        await transport.aclose()
    status, _ = await pod_json(sandbox, "echo-1")
    assert status == 404
    async with session_to(sandbox, new) as session:  # the new pod serves
        _, data = await open_pair(session, 5000, "0")
        await data.send_all(b"new")
        assert await data.receive_some() == b"new"


async def test_set_phase_and_readiness(sandbox: Sandbox) -> None:
    sandbox.set_ready("echo-1", False)
    _, pod = await pod_json(sandbox, "echo-1")
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    sandbox.set_phase("echo-1", "Failed")
    _, pod = await pod_json(sandbox, "echo-1")
    assert pod["status"]["phase"] == "Failed"


# -- kubectl -----------------------------------------------------------------------


async def assert_ended(stream: trio.SocketStream) -> None:
    """kubectl closed the local connection (EOF or reset: either way it ended)."""
    with trio.fail_after(5), suppress(trio.BrokenResourceError):
        assert await stream.receive_some() == b""
    await stream.aclose()


@requires_kubectl
@pytest.mark.kubectl
async def test_kubectl_survives_pod_side_reset_and_refused_stream(sandbox: Sandbox) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, "svc/echo", ":80") as fwd:
        (p,) = fwd.local_ports
        stream = await trio.open_tcp_stream("127.0.0.1", p)
        await stream.send_all(b"a")
        assert await stream.receive_some() == b"a"
        assert sandbox.reset_pod_connections("echo-1") == 1
        await assert_ended(stream)
        sandbox.refuse_streams(True)
        stream = await trio.open_tcp_stream("127.0.0.1", p)
        await assert_ended(stream)
        sandbox.refuse_streams(False)
        stream = await trio.open_tcp_stream("127.0.0.1", p)  # kubectl is still serving
        await stream.send_all(b"b")
        with trio.fail_after(5):
            assert await stream.receive_some() == b"b"
        await stream.aclose()
        assert fwd.process.returncode is None


@requires_kubectl
@pytest.mark.kubectl
@pytest.mark.parametrize("websockets", [True, False], ids=["websocket", "spdy"])
async def test_kubectl_lost_connection_on_drop(sandbox: Sandbox, websockets: bool) -> None:
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo-1", ":5000",
                                    websockets=websockets) as fwd:
        sandbox.drop_upgraded_connections()
        status, _, err = await fwd.wait_exit()
        assert (status, err.splitlines()[-1]) == (1, "error: lost connection to pod")


@requires_kubectl
@pytest.mark.kubectl
async def test_api_server_stop_and_restart_same_port(sandbox: Sandbox) -> None:
    port = sandbox.port
    async with kubectl_port_forward(sandbox.kubeconfig_path, "pod/echo-1", ":5000") as fwd:
        await sandbox.stop_api()
        status, _, err = await fwd.wait_exit()  # upgraded connections die with the server
        assert (status, err.splitlines()[-1]) == (1, "error: lost connection to pod")
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods", "-o", "name",
                          "--request-timeout", "5s")
    assert r.returncode == 1
    assert b"connect: connection refused" in r.stderr
    await sandbox.start_api()
    assert sandbox.port == port
    r = await run_kubectl(sandbox.kubeconfig_path, "get", "pods", "-o", "name")
    assert (r.returncode, r.stdout) == (0, b"pod/echo-1\n")


@requires_kubectl
@pytest.mark.kubectl
async def test_kubectl_picks_the_new_pod_after_rollout(sandbox: Sandbox) -> None:
    new = await sandbox.replace_pod("echo-1", grace=3600)  # old one stays terminating
    async with kubectl_port_forward(sandbox.kubeconfig_path, "svc/echo", ":80") as fwd:
        (p,) = fwd.local_ports
        stream = await trio.open_tcp_stream("127.0.0.1", p)
        await stream.send_all(b"z")
        with trio.fail_after(5):
            assert await stream.receive_some() == b"z"
        await stream.aclose()
    targets = [t for _, t in sandbox.api.requests if t.endswith("/portforward")]
    assert targets == [f"/api/v1/namespaces/default/pods/{new}/portforward"]


async def test_admin_rejects_bad_durations_and_phases_without_crashing(sandbox: Sandbox) -> None:
    """QA: ``{"down": -1}`` used to kill the whole sandbox (trio.sleep(-1) in its nursery)."""
    from pfcompose.sandbox.faults import handle_admin

    async def post(path: str, body: str) -> tuple[int, Any]:
        return await handle_admin(sandbox, "POST", path, body.encode())

    assert await post("/_sandbox/apiserver/restart", '{"down": -1}') == (400, {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
        "message": "'down' must be a number of seconds >= 0, not -1"})  # fmt: skip
    code, answer = await post("/_sandbox/streams", '{"delay": NaN}')
    assert (code, answer["message"]) == (400, "'delay' must be a number of seconds >= 0, not NaN")
    code, answer = await post("/_sandbox/pods/default/echo-1/replace", '{"grace": "1"}')
    assert (code, answer["message"]) == (400, "'grace' must be a number of seconds >= 0, not \"1\"")
    code, answer = await post("/_sandbox/pods/default/echo-1/phase", '{"phase": "Bogus"}')
    assert (code, answer["message"]) == (
        400, "'phase' must be one of Pending, Running, Succeeded, Failed, Unknown, not \"Bogus\"")
    assert sandbox.stream_faults.delay == 0.0
    phases = {p["name"]: p["phase"] for p in sandbox.describe()["pods"]}
    assert phases["echo-1"] == "Running"
    # Still serving: the API answers and a valid restart works.
    assert await post("/_sandbox/apiserver/restart", '{"down": 0}') == (200, {})
    assert await post("/_sandbox/pods/default/echo-1/phase", '{"phase": "Pending"}') == (200, {})
