"""Telling "the pod is gone" from "this one connection failed" (issue 12 §5).

The container runtime's words on the error stream — containerd's ``network namespace for
sandbox … is closed`` / ``failed to find sandbox … in store``, CRI-O's ``sandbox … is not
running``, ``pod not found`` — mean the pod's sandbox is gone: the forward re-resolves at
once (keepalive is 60 s here, so no ping would notice). A refused port ends that
connection only: same session, no re-resolve.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from uphelp import Recorder, echo_round_trip, local_port, running_up

from pfcompose.sandbox.kubelet import DIAL_ERRORS, dial_error_text
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE, kubectl_port_forward, requires_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import Pod, State
from pfcompose.up.connection import pod_gone_text
from pfcompose.up.events import Kind

GONE = [k for k in DIAL_ERRORS if k != "refused"]


def _file(transport: str) -> str:
    return ("forwards:\n  e:\n    target: svc/echo\n    ports: [':5000']\n"
            f"    transport: {transport}\n    keepalive: 60s\n"
            "    reconnect: {initial_backoff: 5s, max_backoff: 10s, hold: 10s}\n")


def test_classification_of_every_sandbox_wording() -> None:
    pod = Pod("echo")
    for kind in DIAL_ERRORS:
        text = dial_error_text(pod, 5000, kind)
        assert text.startswith(f"error forwarding port 5000 to pod {pod.sandbox_id}, uid : ")
        assert pod_gone_text(text) is (kind != "refused"), kind
    assert pod_gone_text("read tcp4 127.0.0.1:5000: connection reset by peer") is False


def _resolving_after(events: Recorder, mark: int) -> bool:
    return any(e.kind is Kind.STATE and e.data.get("state") == "resolving"
               for e in events.events[mark:])


async def _connection_error(port: int, events: Recorder, mark: int, half_close: bool) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        if half_close:
            await stream.send_eof()
        event = await events.wait_for(lambda e: e.kind is Kind.CONNECTION_ERROR, after=mark)
    return event.message


def _upgrades(sb: Sandbox) -> int:
    return sum(1 for _, t in sb.api.requests if "/portforward" in t)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
@pytest.mark.parametrize("kind", GONE)
async def test_pod_gone_wording_re_resolves_at_once(tmp_path: Path, transport: str,
                                                    kind: str) -> None:
    half_close = transport != "websocket"
    async with run_sandbox(State.from_dict(DEFAULT_STATE)) as sb, running_up(
            sb, tmp_path, _file(transport)) as (supervisor, events):
        await events.ready("e")
        port = local_port(supervisor, "e")
        mark = len(events.events)
        upgrades = _upgrades(sb)
        sb.stream_faults.dial_error = kind
        message = await _connection_error(port, events, mark, half_close)
        assert dial_error_text(sb.pod("echo"), 5000, kind) in message
        sb.stream_faults.dial_error = None
        # re-resolved and ready again well inside the 5 s backoff and the 60 s keepalive
        with trio.fail_after(3):
            await events.ready("e", after=mark)
        assert _resolving_after(events, mark)
        assert _upgrades(sb) > upgrades + (0 if half_close else 1)
        assert any("the container runtime says the pod is gone" in m
                   for m in events.messages("e", Kind.ERROR))
        assert await echo_round_trip(port, b"back", half_close=half_close) == b"back"


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_refused_port_ends_that_connection_only(tmp_path: Path, transport: str) -> None:
    half_close = transport != "websocket"
    async with run_sandbox(State.from_dict(DEFAULT_STATE)) as sb, running_up(
            sb, tmp_path, _file(transport)) as (supervisor, events):
        await events.ready("e")
        port = local_port(supervisor, "e")
        mark = len(events.events)
        upgrades = _upgrades(sb)
        sb.stream_faults.dial_error = "refused"
        message = await _connection_error(port, events, mark, half_close)
        assert "connect: connection refused" in message
        sb.stream_faults.dial_error = None
        assert await echo_round_trip(port, b"same", half_close=half_close) == b"same"
        assert not _resolving_after(events, mark)
        if half_close:  # the same session carried the next connection
            assert _upgrades(sb) == upgrades


@pytest.mark.kubectl
@requires_kubectl
async def test_kubectl_reports_the_same_runtime_words(tmp_path: Path) -> None:
    async with run_sandbox(State.from_dict(DEFAULT_STATE)) as sb:
        sb.stream_faults.dial_error = "netns-closed"
        async with kubectl_port_forward(sb.kubeconfig_path, "pod/echo", ":5000",
                                        addresses=("127.0.0.1",)) as kubectl:
            stream = await trio.open_tcp_stream("127.0.0.1", kubectl.local_ports[0])
            async with stream:
                await stream.send_eof()
                with trio.fail_after(10):
                    while (line := await kubectl._stderr.readline()) is not None:
                        if "an error occurred forwarding" in line:
                            break
            assert line is not None
            assert dial_error_text(sb.pod("echo"), 5000, "netns-closed") in line.replace('\\"', '"')
