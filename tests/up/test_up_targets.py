"""Every target kind, named and service ports, all transports — against the sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from uphelp import echo_round_trip, running_up

from pfcompose.sandbox.server import Sandbox
from pfcompose.up.events import Kind


def _file(transport: str) -> str:
    return f"""
defaults:
  transport: {transport}
  addresses: [localhost]
forwards:
  pod:
    target: pod/echo
    ports: [":5000"]
  svc-named:
    target: svc/echo
    ports: [":echo"]
  svc-numeric:
    target: service/echo
    ports: [":5000"]
  svc-port:
    target: svc/echo
    ports: [":80"]
  deploy:
    target: deploy/web
    ports: [":http"]
  selector:
    selector: app=echo
    ports: [":echo"]
"""


async def test_every_target_kind_over_every_transport(
    sandbox: Sandbox, tmp_path: Path, transport: str
) -> None:
    async with running_up(sandbox, tmp_path, _file(transport)) as (supervisor, events):
        for name in ("pod", "svc-named", "svc-numeric", "svc-port", "deploy", "selector"):
            await events.ready(name)
        expected_transport = "spdy-over-websocket" if transport == "auto" else transport
        for status in supervisor.statuses:
            assert status.transport == expected_transport
        by_name = {s.name: s for s in supervisor.statuses}
        for name in ("pod", "svc-named", "svc-numeric", "svc-port", "selector"):
            port = by_name[name].listening[0].local
            payload = os.urandom(100_000) + name.encode()
            echoed = await echo_round_trip(port, payload, half_close=transport != "websocket")
            assert echoed == payload, name
        # the deployment's pod serves http
        port = by_name["deploy"].listening[0].local
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while data := await stream.receive_some(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"web-" in answer


async def test_random_port_is_the_same_on_both_loopbacks(sandbox: Sandbox, tmp_path: Path) -> None:
    text = "forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n"
    async with running_up(sandbox, tmp_path, text) as (supervisor, events):
        await events.ready("e")
        (status,) = supervisor.statuses
        assert [entry.address for entry in status.listening] == ["127.0.0.1", "::1"]
        port = status.listening[0].local
        assert port != 0 and status.listening[1].local == port
        assert events.messages("e", Kind.LISTENING) == [
            f"Forwarding from 127.0.0.1:{port} -> 5000",
            f"Forwarding from [::1]:{port} -> 5000",
        ]
        for host in ("127.0.0.1", "::1"):
            assert await echo_round_trip(port, b"hello " + host.encode(), host) == (
                b"hello " + host.encode()
            )
        assert events.messages("e", Kind.CONNECTION) == [f"Handling connection for {port}"] * 2
