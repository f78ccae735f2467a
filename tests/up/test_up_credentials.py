"""Credentials that lapse mid-run: every transport takes its credential from the cache
per connection attempt, a 401 re-evaluates once at once, an established session
outlives its token, and a failing exec plugin is one line, retried with backoff.

The sandbox mints short-lived tokens (``token_ttl``) through its exec plugin and
refuses them once expired; its clock is moved forward instead of sleeping.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio
import yaml
from uphelp import echo_round_trip, local_port, running_up

from pfcompose.kube.cache import ForwardAccess
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.up.events import Kind


def forwards(transport: str) -> str:
    return (f"forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n"
            f"    transport: {transport}\n")


async def try_echo(port: int, payload: bytes) -> bytes:
    """One websocket-transport echo; b"" when the connection was reset instead."""
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(payload)
                got = b""
                while len(got) < len(payload):
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    got += data
            except (trio.BrokenResourceError, OSError):
                return b""
    return got


def lapse_tokens(sb: Sandbox, offset: list[float]) -> None:
    """Move the sandbox's clock past every token minted so far (1 h tokens)."""
    offset[0] += 7200.0


async def test_every_transport_survives_a_lapsed_token(tmp_path: Path, transport: str) -> None:
    offset = [0.0]
    async with run_sandbox(State.from_dict(DEFAULT_STATE), token_ttl=3600) as sb:
        sb.auth.clock = lambda: time.time() + offset[0]
        load = ForwardAccess(str(sb.kubeconfig_path), None)
        async with running_up(sb, tmp_path, forwards(transport), loader=load) as (sup, events):
            await events.ready("e")
            port = local_port(sup, "e")
            half = transport != "websocket"
            assert await echo_round_trip(port, b"one", half_close=half) == b"one"
            assert sb.auth.mints == 1
            mark = len(events.events)
            lapse_tokens(sb, offset)  # the server now refuses the token pfcompose holds
            for n in range(3):
                payload = f"after-{n}".encode()
                assert await echo_round_trip(port, payload, half_close=half) == payload
            if transport == "websocket":  # one upgrade per connection: renewed on the 401
                assert sb.auth.mints == 2
                assert sb.auth.expired_rejected >= 1
            else:  # the established SPDY session is not torn down by the token's expiry
                assert sb.auth.mints == 1
            later = events.events[mark:]
            assert not [e for e in later if e.kind in (Kind.CONNECTION_ERROR, Kind.ERROR)]
            assert not [e for e in later if e.kind is Kind.STATE]  # never re-linked


async def test_a_401_on_reconnect_re_evaluates_at_once(tmp_path: Path) -> None:
    offset = [0.0]
    async with run_sandbox(State.from_dict(DEFAULT_STATE), token_ttl=3600) as sb:
        sb.auth.clock = lambda: time.time() + offset[0]
        load = ForwardAccess(str(sb.kubeconfig_path), None)
        async with running_up(sb, tmp_path, forwards("spdy"), loader=load) as (sup, events):
            await events.ready("e")
            mark = len(events.events)
            lapse_tokens(sb, offset)
            sb.drop_upgraded_connections()  # a new session: resolve (REST) gets the 401
            await events.ready("e", after=mark)
            assert sb.auth.expired_rejected == 1
            assert sb.auth.mints == 2
            later = events.events[mark:]
            # the 401 was answered by renewing, not reported and backed off
            assert not [e for e in later if "Unauthorized" in e.message]
            assert [e.data.get("attempt") for e in later
                    if e.data.get("state") == "reconnecting"] == [1]
            assert await echo_round_trip(local_port(sup, "e"), b"x") == b"x"


FLAKY_PLUGIN = """\
import json, sys
token = open(sys.argv[1]).read().strip()
if token == "fail":
    print("opening https://login.example/device ...", file=sys.stderr)
    print("error: the refresh token has expired; run acme login", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token}}))
"""


async def test_a_failing_plugin_is_one_line_and_retried(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(FLAKY_PLUGIN)
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token="first") as sb:
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        config["users"][0]["user"] = {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(plugin), str(token_file)], "interactiveMode": "IfAvailable"}}
        kubeconfig = tmp_path / "kc"
        kubeconfig.write_text(yaml.safe_dump(config))
        load = ForwardAccess(str(kubeconfig), None)
        async with running_up(sb, tmp_path, forwards("auto"), loader=load) as (sup, events):
            await events.ready("e")
            mark = len(events.events)
            sb.token = "second"
            token_file.write_text("fail")
            sb.drop_upgraded_connections()
            expected = (f'exec plugin "{sys.executable}" failed: '
                        "error: the refresh token has expired; run acme login")
            await events.wait_for(lambda e: e.kind is Kind.ERROR and e.message == expected,
                                  after=mark)
            runs = load.cache.evaluations
            with trio.fail_after(15):  # retried with backoff while it fails
                while load.cache.evaluations < runs + 2:
                    await events.wait_for(lambda e: e.kind is Kind.STATE,
                                          after=len(events.events))
            errors = [e.message for e in events.events[mark:] if e.kind is Kind.ERROR]
            assert errors.count(expected) == 1  # said once, not at every retry
            assert all("\n" not in m for m in errors)
            assert sup.statuses[0].last_error == expected  # what `ps` shows
            token_file.write_text("second")
            await events.ready("e", after=mark, timeout=20)
            assert await echo_round_trip(local_port(sup, "e"), b"back") == b"back"


async def test_websocket_dials_report_a_failing_plugin_in_ps(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(FLAKY_PLUGIN)
    async with run_sandbox(State.from_dict(DEFAULT_STATE), tls=True, token="first") as sb:
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        config["users"][0]["user"] = {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(plugin), str(token_file)], "interactiveMode": "Never"}}
        kubeconfig = tmp_path / "kc"
        kubeconfig.write_text(yaml.safe_dump(config))
        load = ForwardAccess(str(kubeconfig), None)
        async with running_up(sb, tmp_path, forwards("websocket"), loader=load) as (sup, events):
            await events.ready("e")
            port = local_port(sup, "e")
            sb.token = "second"  # the held token is refused: the dial re-evaluates
            token_file.write_text("fail")
            mark = len(events.events)
            assert await try_echo(port, b"x") == b""  # closed (reset): no credential
            expected = (f'exec plugin "{sys.executable}" failed: '
                        "error: the refresh token has expired; run acme login")
            failed = await events.wait_for(lambda e: e.kind is Kind.CONNECTION_ERROR, after=mark)
            assert failed.message.endswith(expected)
            assert sup.statuses[0].last_error == expected  # `ps` says why, still ready
            assert sup.statuses[0].state.value == "ready"
            token_file.write_text("second")
            with trio.fail_after(10):  # the failure is remembered ~1 s, then retried
                while await try_echo(port, b"ok") != b"ok":
                    await trio.sleep(0.2)
            assert sup.statuses[0].last_error is None
