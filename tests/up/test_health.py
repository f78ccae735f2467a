"""Health checks against the sandbox: each kind healthy, then unhealthy, then healthy again.

The sandbox's app faults make a pod port refuse, answer 500 or hang; states are
awaited through events (no sleeps). Checks run every 0.1 s with one retry, so a
change shows within a few hundred milliseconds.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import trio
from uphelp import Recorder, echo_round_trip, local_port, running_up

from pfcompose.daemon.status import render_plain, status_record
from pfcompose.sandbox.server import Sandbox
from pfcompose.up.events import Kind

STATE: dict[str, Any] = {
    "pods": [
        {"name": "echo", "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"}]},
        {"name": "web", "ports": [{"containerPort": 8080, "name": "http", "serve": "http"}]},
    ],
}


@pytest.fixture
def sandbox_state() -> dict[str, Any]:
    return STATE


def _file(check: str, target: str = "pod/web", port: str = ":8080", extra: str = "") -> str:
    return (
        "forwards:\n"
        f"  app:\n    target: {target}\n    ports: [\"{port}\"]\n{extra}"
        f"    healthcheck: {{{check}, interval: 100ms, timeout: 500ms, retries: 1}}\n"
    )


async def _health(recorder: Recorder, state: str, after: int = 0) -> str:
    event = await recorder.wait_for(
        lambda e: e.kind is Kind.HEALTH and e.data.get("health") == state, after=after
    )
    return event.message


async def _cycle(sandbox: Sandbox, tmp_path: Path, text: str, fault: str, port: int,
                 reason: str) -> None:  # fmt: skip
    async with running_up(sandbox, tmp_path, text) as (supervisor, recorder):
        assert await _health(recorder, "healthy") == "health: healthy"
        start = len(recorder.events)
        sandbox.set_app_fault("web" if port == 8080 else "echo", port, fault)
        message = await _health(recorder, "unhealthy", start)
        assert reason in message, message
        status = supervisor.statuses[0]
        assert status.state.value == "ready"  # the session is fine: the app is not
        assert status.healthy is False  # the hook metrics and top read
        assert status.checks_total >= 2
        assert status.connections_total >= status.checks_total
        record = status_record(status)
        assert record["health"] == "unhealthy" and reason in record["health_detail"]
        assert "unhealthy: " in render_plain([record])
        # No check's ending is reported as a failed user connection.
        assert not recorder.messages("app", Kind.CONNECTION_ERROR)
        assert not recorder.messages("app", Kind.CONNECTION)
        start = len(recorder.events)
        sandbox.set_app_fault("web" if port == 8080 else "echo", port, None)
        await _health(recorder, "healthy", start)
        # Reported once per change, not once per interval.
        changes = [e.data["health"] for e in recorder.events if e.kind is Kind.HEALTH]
        assert changes == ["starting", "healthy", "unhealthy", "healthy"], changes


async def test_http_check_500(sandbox: Sandbox, tmp_path: Path) -> None:
    await _cycle(sandbox, tmp_path, _file("type: http, path: /healthz"), "error", 8080,
                 "HTTP 500 from /healthz (expected 200-399)")


async def test_http_check_hang_is_cut_at_timeout(sandbox: Sandbox, tmp_path: Path) -> None:
    await _cycle(sandbox, tmp_path, _file("type: http"), "hang", 8080,
                 "http check timed out after 0.5s")


async def test_http_check_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    await _cycle(sandbox, tmp_path, _file("type: http"), "refuse", 8080, "refused")


async def test_tcp_check_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    text = _file("type: tcp", target="pod/echo", port=":5000")
    await _cycle(sandbox, tmp_path, text, "refuse", 5000, "refused")


async def test_exec_check(sandbox: Sandbox, tmp_path: Path) -> None:
    flag = tmp_path / "sick"
    # $$: the file's own interpolation would expand $VAR when the file is loaded.
    command = (f'test ! -e {flag} && test -n "$$PFCOMPOSE_APP_5000" '
               '&& test "$$PFCOMPOSE_APP_HOST" = 127.0.0.1')
    text = _file(f"type: exec, command: '{command}'", target="pod/echo", port=":5000")
    async with running_up(sandbox, tmp_path, text) as (supervisor, recorder):
        await _health(recorder, "healthy")
        start = len(recorder.events)
        flag.write_text("")
        assert "exec check exited 1" in await _health(recorder, "unhealthy", start)
        start = len(recorder.events)
        flag.unlink()
        await _health(recorder, "healthy", start)
        # The forward itself carries data all along.
        port = local_port(supervisor, "app")
        assert await echo_round_trip(port, b"ping") == b"ping"


async def test_exec_check_hang_is_killed_at_timeout(sandbox: Sandbox, tmp_path: Path) -> None:
    text = _file("type: exec, command: 'exec sleep 30'", target="pod/echo", port=":5000")
    async with running_up(sandbox, tmp_path, text) as (_, recorder):
        with trio.fail_after(5):
            message = await _health(recorder, "unhealthy")
        assert "exec check timed out after 0.5s" in message


async def test_start_period_failures_do_not_count(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.set_app_fault("web", 8080, "error")
    text = _file("type: http, start_period: 1h")
    async with running_up(sandbox, tmp_path, text) as (supervisor, recorder):
        status = supervisor.statuses[0]
        with trio.fail_after(10):
            while "HTTP 500" not in status.health_detail:
                await trio.sleep(0.05)  # polling observable state, bounded
        assert status.health == "starting"
        sandbox.set_app_fault("web", 8080, None)
        await _health(recorder, "healthy")


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_checks_over_each_transport(sandbox: Sandbox, tmp_path: Path, transport: str) -> None:
    extra = f"    transport: {transport}\n"
    await _cycle(sandbox, tmp_path, _file("type: http", extra=extra), "error", 8080, "HTTP 500")
    text = _file("type: tcp", target="pod/echo", port=":5000", extra=extra)
    await _cycle(sandbox, tmp_path, text, "refuse", 5000, "refused")


async def test_https_check_insecure_and_host_header(sandbox: Sandbox, tmp_path: Path) -> None:
    """An https pod (a TLS server the test runs, reached through a ``target:`` port)."""
    import h11

    from pfcompose.sandbox.state import Behaviour, ContainerPort, Pod
    from pfcompose.sandbox.tls import make_pki

    pki = make_pki(tmp_path / "pki")
    hosts: list[str] = []

    async def serve(stream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # a client refused our certificate
            await answer(stream)

    async def answer(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                hosts.append(dict(event.headers)[b"host"].decode())
                answer = conn.send(h11.Response(status_code=204, headers=[]))
                await stream.send_all((answer or b"") + (conn.send(h11.EndOfMessage()) or b""))
                return

    context = pki.server_context(require_client_cert=False)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_ssl_over_tcp, serve, 0, context)
        tls_port = listeners[0].transport_listener.socket.getsockname()[1]
        await sandbox.add_pod(Pod("tls", ports=[ContainerPort(
            8443, serve=Behaviour("target", "127.0.0.1", tls_port))]))  # fmt: skip
        good = _file("type: http, https: true, insecure: true, host: api.test, expect: 204",
                     target="pod/tls", port=":8443")  # fmt: skip
        async with running_up(sandbox, tmp_path, good) as (_, recorder):
            await _health(recorder, "healthy")
        assert hosts[0] == "api.test"
        strict = _file("type: http, https: true", target="pod/tls", port=":8443")
        async with running_up(sandbox, tmp_path, strict) as (_, recorder):
            assert "certificate verify failed" in await _health(recorder, "unhealthy")
        nursery.cancel_scope.cancel()
