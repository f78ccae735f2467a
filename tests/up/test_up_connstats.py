"""Per-connection accounting: bytes each way, duration, peer, result and why it ended."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from uphelp import Recorder, echo_round_trip, local_port, running_up

from pfcompose.sandbox.server import Sandbox
from pfcompose.up.events import Event, Kind


def _file(transport: str, port: str = ":5000") -> str:
    return f"""
forwards:
  f:
    target: pod/echo
    ports: ["{port}"]
    transport: {transport}
    reconnect: {{hold: 2s}}
"""


def _closed(event: Event) -> bool:
    return event.kind is Kind.CONNECTION_CLOSED


async def _next_closed(events: Recorder, after: int) -> Event:
    return await events.wait_for(_closed, after=after)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_ended_connection_is_counted_exactly(
    sandbox: Sandbox, tmp_path: Path, transport: str
) -> None:
    async with running_up(sandbox, tmp_path, _file(transport)) as (supervisor, events):
        await events.ready("f")
        port = local_port(supervisor, "f")
        payload = bytes(range(256)) * 1000 + b"tail"
        mark = len(events.events)
        if transport == "websocket":
            back = await _echo_then_reset(port, payload)
        else:
            back = await echo_round_trip(port, payload)
        assert back == payload
        event = await _next_closed(events, mark)
        data = event.data
        assert data["bytes_in"] == data["bytes_out"] == len(payload)
        assert data["result"] == "ok"
        assert data["reason"] in ("local close", "pod close")
        assert data["peer"].startswith("127.0.0.1:") and data["local"] == port
        assert 0 <= data["connect_latency"] <= data["duration"]
        assert event.message.startswith(f"connection from {data['peer']} to {port} ended after")
        assert event.message.endswith(f"; ok ({data['reason']})")
        (status,) = supervisor.statuses
        traffic = status.traffic
        assert traffic.results == {"ok": 1, "refused": 0, "reset": 0, "error": 0}
        assert sum(traffic.latency) == 1
        assert list(traffic.recent) == [{k: data[k] for k in traffic.recent[0]}]


async def _echo_then_reset(port: int, payload: bytes) -> bytes:
    """The channel protocol has no half-close (a local EOF is not passed on and the
    pod's echo waits for more): read the echo back, then close with a reset."""
    from pfcompose.up.listeners import set_linger_reset

    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(payload)
        got = b""
        while len(got) < len(payload):
            got += await stream.receive_some(1 << 20)
        set_linger_reset(stream)
        await stream.aclose()
    return got


async def test_spdy_local_close_first_is_local_close(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_up(sandbox, tmp_path, _file("spdy")) as (supervisor, events):
        await events.ready("f")
        mark = len(events.events)
        assert await echo_round_trip(local_port(supervisor, "f"), b"ping") == b"ping"
        event = await _next_closed(events, mark)
        assert event.data["reason"] == "local close"  # our FIN went first, the echo's after


async def test_refused_port_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_up(sandbox, tmp_path, _file("spdy", ":5999")) as (supervisor, events):
        await events.ready("f")
        mark = len(events.events)
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", local_port(supervisor, "f"))
            async with stream:
                with pytest.raises(trio.BrokenResourceError):
                    while await stream.receive_some(100):
                        pass
        event = await _next_closed(events, mark)
        assert event.data["result"] == "refused"
        assert "connection refused" in event.data["reason"]
        assert event.data["bytes_in"] == event.data["bytes_out"] == 0
        assert supervisor.statuses[0].traffic.results["refused"] == 1


async def test_pod_reset_is_reset(sandbox: Sandbox, tmp_path: Path) -> None:
    async with running_up(sandbox, tmp_path, _file("spdy")) as (supervisor, events):
        await events.ready("f")
        mark = len(events.events)
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", local_port(supervisor, "f"))
            async with stream:
                await stream.send_all(b"12345")
                got = b""
                while len(got) < 5:
                    got += await stream.receive_some(100)
                assert sandbox.reset_pod_connections("echo") >= 1
                with pytest.raises(trio.BrokenResourceError):
                    while await stream.receive_some(100):
                        pass
        event = await _next_closed(events, mark)
        assert event.data["result"] == "reset" and event.data["reason"] == "pod reset"
        assert event.data["bytes_in"] == event.data["bytes_out"] == 5


async def test_closed_lines_stay_off_up_output() -> None:
    import io

    from pfcompose.up.ui import JsonSink, TerminalSink

    out, err = io.StringIO(), io.StringIO()
    sinks = [TerminalSink(["f"], out=out, err=err, colour=False), JsonSink(out)]
    for sink in sinks:
        sink(Event("f", Kind.CONNECTION_CLOSED, "connection from … ended", data={}))
    assert out.getvalue() == err.getvalue() == ""


async def test_no_session_within_hold_is_an_error(sandbox: Sandbox, tmp_path: Path) -> None:
    text = """
forwards:
  f:
    target: pod/ghost
    ports: ["0:80"]
    reconnect: {hold: 100ms, initial_backoff: 5s, max_backoff: 5s}
"""
    async with running_up(sandbox, tmp_path, text) as (supervisor, events):
        await events.wait_for(lambda e: e.kind is Kind.LISTENING)
        mark = len(events.events)
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", local_port(supervisor, "f"))
            async with stream:
                with pytest.raises(trio.BrokenResourceError):
                    while await stream.receive_some(100):
                        pass
        event = await _next_closed(events, mark)
        assert event.data["result"] == "error"
        assert event.data["reason"] == "no session to the pod within 0.1s"
        assert event.data["connect_latency"] is None
