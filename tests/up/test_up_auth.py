"""Cluster access: TLS with CA, client certificate and token; exec-plugin token renewal."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import trio
import yaml
from uphelp import echo_round_trip, local_port, running_up

from pfcompose.kube.cache import ForwardAccess
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE
from pfcompose.sandbox.server import run_sandbox
from pfcompose.sandbox.state import State

FILE = "forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n"

PLUGIN = """\
import json, sys
token = open(sys.argv[1]).read().strip()
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": {"token": token}}))
"""


async def test_tls_with_client_certificate_and_token(tmp_path: Path) -> None:
    state = State.from_dict(DEFAULT_STATE)
    async with run_sandbox(state, tls=True, require_client_cert=True, token="s3cret") as sb:
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        assert config["clusters"][0]["cluster"]["server"].startswith("https://")
        async with running_up(sb, tmp_path, FILE) as (supervisor, events):
            await events.ready("e")
            port = local_port(supervisor, "e")
            assert await echo_round_trip(port, b"over tls") == b"over tls"


async def test_exec_plugin_token_is_renewed_on_reconnect(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    state = State.from_dict(DEFAULT_STATE)
    async with run_sandbox(state, token="first") as sb:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sb",
            "clusters": [{"name": "sb", "cluster": {"server": sb.url}}],
            "users": [{"name": "sb", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": sys.executable, "args": [str(plugin), str(token_file)],
                "interactiveMode": "Never"}}}],
            "contexts": [{"name": "sb", "context": {"cluster": "sb", "user": "sb"}}],
        }))  # fmt: skip

        # as `up` runs: evaluated once and cached; the server's 401 makes it evaluate again
        load = ForwardAccess(str(kubeconfig), None)
        async with running_up(sb, tmp_path, FILE, loader=load) as (supervisor, events):
            await events.ready("e")
            port = local_port(supervisor, "e")
            assert await echo_round_trip(port, b"one") == b"one"
            # the credential expires: the server now wants the plugin's next token
            mark = len(events.events)
            sb.token = "second"
            token_file.write_text("second")
            sb.drop_upgraded_connections()
            await events.ready("e", after=mark, timeout=20)
            assert await echo_round_trip(port, b"two") == b"two"
            assert load.cache.evaluations == 2


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _foreign_threads() -> list[str]:
    return [
        t.name for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("Trio thread")
    ]  # fmt: skip


async def test_nothing_is_left_behind(tmp_path: Path) -> None:
    before = _fds()
    threads_before = _foreign_threads()
    state: Any = State.from_dict(DEFAULT_STATE)
    async with run_sandbox(state) as sb:
        async with running_up(sb, tmp_path, FILE) as (supervisor, events):
            await events.ready("e")
            port = local_port(supervisor, "e")
            held = await trio.open_tcp_stream("127.0.0.1", port)  # open during the stop
            await held.send_all(b"x")
            assert await held.receive_some(1) == b"x"
        await held.aclose()
    await trio.testing.wait_all_tasks_blocked()
    leaked = _fds() - before
    # fds the kernel reuses may differ in number; what matters is that none stay open
    assert len(_fds()) <= len(before), f"file descriptors left open: {sorted(leaked)}"
    assert _foreign_threads() == threads_before
