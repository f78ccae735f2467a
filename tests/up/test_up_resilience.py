"""What kubectl cannot do: survive refused ports, pod restarts and API server restarts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from uphelp import echo_round_trip, local_port, running_up

from pfcompose.sandbox.server import Sandbox
from pfcompose.sandbox.state import Behaviour, ContainerPort, Pod
from pfcompose.up.events import Kind

STATE: dict[str, Any] = {
    "pods": [
        {"name": "app-1", "labels": {"app": "app"},
         "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"},
                   {"containerPort": 6000, "name": "closed", "serve": "none"}]},
    ],
}

FILE = """
forwards:
  app:
    selector: app=app
    ports: [":5000", ":6000"]
    reconnect: {initial_backoff: 100ms, max_backoff: 5s, hold: 10s}
"""


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


async def _open_echo(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def _echo_once(stream: trio.SocketStream, payload: bytes) -> bytes:
    await stream.send_all(payload)
    got = b""
    with trio.fail_after(10):
        while len(got) < len(payload):
            data = await stream.receive_some(65536)
            if not data:
                break
            got += data
    return got


async def test_a_refused_pod_port_ends_only_that_connection(
    sandbox: Sandbox, tmp_path: Path, transport: str
) -> None:
    text = FILE.replace("forwards:", f"defaults: {{transport: {transport}}}\nforwards:")
    async with running_up(sandbox, tmp_path, text) as (supervisor, events):
        await events.ready("app")
        echo_port, closed_port = local_port(supervisor, "app", 0), local_port(supervisor, "app", 1)
        survivor = await _open_echo(echo_port)
        async with survivor:
            assert await _echo_once(survivor, b"before") == b"before"
            refused = await trio.open_tcp_stream("127.0.0.1", closed_port)
            async with refused:
                with trio.fail_after(10):
                    with pytest.raises((trio.BrokenResourceError, ConnectionResetError)):
                        while await refused.receive_some(100):
                            pass
                        raise trio.BrokenResourceError  # a clean EOF would be a lie too
            error = await events.wait_for(lambda e: e.kind is Kind.CONNECTION_ERROR)
            assert error.message.startswith(f"an error occurred forwarding {closed_port} -> 6000: ")
            assert "error forwarding port 6000 to pod" in error.message
            assert "connection refused" in error.message
            # the other connection and the session carry on
            assert await _echo_once(survivor, b"after") == b"after"
        states = [e.data.get("state") for e in events.events if e.kind is Kind.STATE]
        assert states.count("ready") == 1 and "reconnecting" not in states


async def test_pod_killed_mid_transfer_then_replaced(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_up(sandbox, tmp_path, FILE) as (supervisor, events):
        await events.ready("app")
        port = local_port(supervisor, "app", 0)
        doomed = await _open_echo(port)
        assert await _echo_once(doomed, b"x" * 1000) == b"x" * 1000
        mark = len(events.events)
        await sandbox.kill_pod("app-1")
        # the connection in flight breaks, visibly (a reset, not a clean EOF)
        with trio.fail_after(10), pytest.raises((trio.BrokenResourceError, ConnectionResetError)):
            while await doomed.receive_some(100):
                pass
            raise trio.BrokenResourceError
        await doomed.aclose()
        await events.wait_for(
            lambda e: e.kind is Kind.STATE and e.data.get("state") == "reconnecting", after=mark
        )
        # a connection made during the gap waits (reconnect.hold) and is served later
        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def early_client() -> None:
                result.append(await echo_round_trip(port, b"made during the gap"))

            nursery.start_soon(early_client)
            await events.wait_for(lambda e: e.kind is Kind.CONNECTION, after=mark)
            await sandbox.add_pod(
                Pod("app-2", labels={"app": "app"},
                    ports=[ContainerPort(5000, name="echo", serve=Behaviour("echo"))])
            )
            with trio.fail_after(2):  # the watch wakes the forward: no backoff wait
                ready = await events.ready("app", after=mark)
            assert ready.data.get("pod") == "app-2"
        assert result == [b"made during the gap"]
        assert await echo_round_trip(port, b"fresh") == b"fresh"


async def test_api_server_restart_reconnects(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_up(sandbox, tmp_path, FILE) as (supervisor, events):
        await events.ready("app")
        port = local_port(supervisor, "app", 0)
        mark = len(events.events)
        await sandbox.stop_api()
        sandbox.drop_upgraded_connections()
        await events.wait_for(
            lambda e: e.kind is Kind.STATE and e.data.get("state") == "reconnecting", after=mark
        )
        await sandbox.start_api()
        await events.ready("app", after=mark, timeout=20)
        payload = os.urandom(50_000)
        assert await echo_round_trip(port, payload) == payload
