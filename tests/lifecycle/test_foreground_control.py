"""``down``, ``wait``, ``logs`` and ``restart`` reach a foreground ``up`` as a daemon.

The product runs forwards "until Ctrl-C or ``pfcompose down``": a project started
with a plain ``up`` in one terminal is stopped, waited for and restarted from
another. Real processes against the sandbox; every process started is stopped.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from lchelp import echo_through, pf, write_project

from pfcompose.daemon import control
from pfcompose.sandbox.server import Sandbox
from pfcompose.up.observe import ForegroundControl, Watch

TWO = {
    "echo": {"target": "pod/echo", "ports": [":5000"]},
    "web": {"target": "deployment/web", "ports": [":8080"]},
}


@dataclass
class Foreground:
    """A foreground ``up --json`` and the event lines it printed so far."""

    process: trio.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    buffer: bytes = b""

    async def read_until(self, done: Any, timeout: float = 20) -> None:
        """Read event lines until ``done(lines)``; fails if ``up`` exits first."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while not done(self.lines):
                chunk = await self.process.stdout.receive_some(65536)
                assert chunk, f"up exited early: {self.lines}"
                self.buffer += chunk
                *complete, self.buffer = self.buffer.split(b"\n")
                self.lines += [json.loads(raw) for raw in complete]

    async def read_until_end(self) -> None:
        assert self.process.stdout is not None
        with trio.fail_after(20):
            while chunk := await self.process.stdout.receive_some(65536):
                self.buffer += chunk
        self.lines += [json.loads(raw) for raw in self.buffer.split(b"\n") if raw]
        self.buffer = b""


@asynccontextmanager
async def foreground_up(file: Path, sb: Sandbox, *more: str) -> AsyncIterator[Foreground]:
    command = [sys.executable, "-m", "pfcompose", "up", "--json", "-f", str(file),
               "--kubeconfig", str(sb.kubeconfig_path), *more]  # fmt: skip
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                command, stdout=subprocess.PIPE, check=False, task_status=task_status
            )
        )
        try:
            up = Foreground(process)
            # The control socket is bound before the supervisor prints anything.
            await up.read_until(lambda lines: bool(lines))
            yield up
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
                    with trio.move_on_after(10):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                await process.wait()


@dataclass
class Output:
    """A process's standard output, read as it comes."""

    process: trio.Process
    text: str = ""

    async def read_until(self, pattern: str, timeout: float = 20) -> None:
        assert self.process.stdout is not None
        with trio.move_on_after(timeout):
            while not re.search(pattern, self.text):
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    break
                self.text += chunk.decode()
        assert re.search(pattern, self.text), f"{pattern!r} never printed:\n{self.text}"


@asynccontextmanager
async def _output_of(*args: str) -> AsyncIterator[Output]:
    """``pfcompose ARGS`` running with its output piped; killed if still running."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pfcompose", *args], stdout=subprocess.PIPE
    )
    try:
        yield Output(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


def _listening(lines: list[dict[str, Any]]) -> set[str]:
    return {line["forward"] for line in lines if line["kind"] == "listening"}


def _local(lines: list[dict[str, Any]], name: str) -> int:
    return int(
        next(ln["local"] for ln in lines if ln["kind"] == "listening" and ln["forward"] == name)
    )


async def test_wait_logs_restart_and_down_reach_a_foreground_up(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    file = write_project(tmp_path / "fc", "fc", TWO)
    ports_env = tmp_path / "fc" / "ports.env"
    async with foreground_up(file, sandbox, "--ports-env", str(ports_env)) as up:
        waited = await pf("wait", "-f", file, "--timeout", "20")
        assert (waited.code, waited.out) == (0, "echo: ready\nweb: ready\n"), waited.err
        await up.read_until(lambda lines: {"echo", "web"} <= _listening(lines))
        echo_port = _local(up.lines, "echo")
        assert f"PFCOMPOSE_ECHO_5000={echo_port}" in ports_env.read_text().splitlines()
        assert await echo_through(echo_port, b"before") == b"before"

        logged = await pf("logs", "--file", file, "--no-color")
        assert "echo | ready (pod echo via spdy-over-websocket)" in logged.out.splitlines()
        # A connection's end is not printed by up: logs --connections has it, once the
        # forward saw the close (followed, so no poll).
        ended = (
            rf"echo \| connection from 127\.0\.0\.1:\d+ to {echo_port} ended after \S+: "
            r"6 B in, 6 B out; ok \(local close\)\n"
        )
        args = ("logs", "--connections", "--follow", "--no-color", "--file", str(file))
        async with _output_of(*args) as connections:
            await connections.read_until(ended)
        assert re.fullmatch(ended, connections.text), connections.text

        # logs -f from here on: the ring so far, then what follows, until the stop.
        async with _output_of("logs", "--follow", "--no-color", "--file", str(file)) as follow:
            restarted = await pf("restart", "-f", file, "web")
            assert (restarted.code, restarted.out) == (0, "web: restarted\n"), restarted.err
            await follow.read_until(r"web\s+\| stopped\n")  # seen: it is following now

            typo = await pf("down", "-f", file, "nope")
            assert (typo.code, typo.err) == (1, "error: no such forward: nope\n")

            some = await pf("down", "-f", file, "web")  # the rest go on
            assert (some.code, some.out) == (0, "web: stopped\n"), some.err
            ps = json.loads((await pf("ps", "-f", file, "--format", "json")).out)
            assert [record["name"] for record in ps] == ["echo"]
            assert await echo_through(echo_port, b"still") == b"still"
            assert up.process.returncode is None

            down = await pf("down", "-f", file)
            assert (down.code, down.out) == (0, "echo: stopped\nproject fc: down\n"), down.err
            # down answered once the forwards were closed: the port refuses at once, and
            # the ports file, no longer true, is gone (as a daemon's, before down returns).
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", echo_port)
            assert not ports_env.exists()
            with trio.fail_after(10):
                assert await up.process.wait() == 0  # as after Ctrl-C
            await up.read_until_end()
            await follow.read_until(r"Gracefully stopping \(pfcompose down\)\.\.\.")
            with trio.fail_after(10):
                assert await follow.process.wait() == 0  # logs -f ended with the project
    stopping = [ln["message"] for ln in up.lines if ln.get("state") == "stopping"]
    assert stopping == ["Gracefully stopping (pfcompose down)... (press Ctrl+C again to force)"]
    assert not control.foreground_paths("fc").socket.exists()
    again = await pf("down", "-f", file)
    assert (again.code, again.err) == (0, "Nothing to stop: project fc is not running.\n")
    late = await pf("wait", "-f", file, "--timeout", "1")
    assert (late.code, late.err) == (1, "error: project fc is not running\n")


class _Supervisor:
    """What ``down`` uses of the supervisor, counting stop requests."""

    def __init__(self) -> None:
        self.requests: list[str | None] = []
        self.forwards: list[Any] = []
        self.statuses: list[Any] = []

    @property
    def stop_requested(self) -> bool:
        return bool(self.requests)

    def request_stop(self, reason: str | None = None) -> None:
        self.requests.append(reason)


async def test_a_second_down_while_stopping_does_not_force_the_stop() -> None:
    """A second ``request_stop`` forces an immediate stop (Ctrl-C twice); two ``down``
    requests, or a ``down`` during a Ctrl-C, must ask for the graceful one only."""
    supervisor, stopping = _Supervisor(), trio.Event()
    plan: Any = type("P", (), {"name": "p", "forwards": {}, "files": []})()
    fg = ForegroundControl(plan, supervisor, Watch(), stopping)  # type: ignore[arg-type]
    answers: list[Any] = []

    async def down() -> None:
        answers.append(await fg.handle("down", {}, _no_push))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(down)
        nursery.start_soon(down)
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor.requests == ["pfcompose down"]  # once, with its reason
        assert answers == []  # neither answers before the forwards are closed
        stopping.set()
    assert answers == [{"stopped": [], "exited": True}] * 2
    with pytest.raises(control.ControlError, match="project p is stopping"):
        await fg.handle("ps", {}, _no_push)


async def _no_push(message: Any) -> None:
    raise AssertionError(f"down pushes nothing: {message}")
