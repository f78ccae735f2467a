"""``pfcompose top`` in a pseudo-terminal and through a pipe, ``logs --connections``,
and metrics of a daemon — against the sandbox, the CLI as real processes.

Screens are read from the pty as they are drawn and waited for with bounded
deadlines on what is visible (no sleeps); every process started is stopped.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from lchelp import echo_through, pf, wait_pid_gone, write_project

from pfcompose.daemon import control
from pfcompose.sandbox.server import Sandbox

ECHO = {"echo": {"target": "pod/echo", "ports": [":5000"]}}
NO_TERMIOS = ("import runpy, sys; sys.modules['termios'] = sys.modules['tty'] = None; "
              "sys.argv = ['pfcompose', *sys.argv[1:]]; runpy.run_module('pfcompose', "
              "run_name='__main__')")  # fmt: skip
TWO = {**ECHO, "web": {"target": "deployment/web", "ports": [":8080"]}}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]")


@asynccontextmanager
async def daemon(file: Path, sb: Sandbox, name: str) -> AsyncIterator[control.ProjectPaths]:
    result = await pf("up", "-d", "--wait", "-f", file, "--kubeconfig", sb.kubeconfig_path)
    assert result.code == 0, result.err
    paths = control.project_paths(name)
    pid = control.locked_pid(paths.lock)
    try:
        yield paths
    finally:
        with trio.CancelScope(shield=True):
            await pf("down", "-f", file)
            if pid is not None:
                await wait_pid_gone(pid)


async def _port(paths: control.ProjectPaths, name: str) -> int:
    state = await control.call(paths, "ps", names=[name])
    return int(state["forwards"][0]["listening"][0]["local"])


class Screen:
    """A process on a pty; ``text`` is everything it drew, escape sequences removed."""

    def __init__(self, master: int, process: trio.Process) -> None:
        self.master, self.process, self.raw = master, process, b""

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    async def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 15) -> int:
        """Until ``pattern`` appears past character ``after``; where its match ends."""
        with trio.fail_after(timeout):
            while True:
                found = re.search(pattern, self.text[after:])
                if found:
                    return after + found.end()
                await trio.lowlevel.wait_readable(self.master)
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    raise AssertionError(f"{pattern!r} never shown:\n{self.text[-3000:]}") from None

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)


@asynccontextmanager
async def top_in_pty(
    file: Path, *names: str, columns: int = 140, rows: int = 40, python: tuple[str, ...] = ()
) -> AsyncIterator[Screen]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    process = await trio.lowlevel.open_process(
        [sys.executable, *(python or ("-m", "pfcompose")), "top", "-f", str(file), *names],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        yield Screen(master, process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            os.close(master)


async def test_top_on_a_terminal(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "tv", "tv", TWO)
    async with daemon(file, sandbox, "tv") as paths:
        port = await _port(paths, "echo")
        assert await echo_through(port, b"x" * 1234) == b"x" * 1234
        async with top_in_pty(file) as screen:
            at = await screen.wait_for(r"pfcompose top\s+project tv \(daemon pid \d+\)")
            at = await screen.wait_for(r"NAME\s+STATE\s+POD\s+TRANSPORT\s+CONNS\s+IN/s", after=at)
            await screen.wait_for(r"echo\s+ready\s+echo\s+spdy-over-websocket\s+0/1\s", after=at)
            await screen.wait_for(
                r"web\s+ready\s+web-[a-z0-9-]+\s+spdy-over-websocket\s+0/0", after=at
            )
            await screen.wait_for(r"TOTAL\s+2 forwards, 2 ready\s+·\s+conns 0/1", after=at)
            await screen.wait_for(r"1\.2 KiB in, 1\.2 KiB out", after=at)

            mark = len(screen.text)
            screen.press(b"\r")  # details of the selected (first) forward
            at = await screen.wait_for(
                r"listening\s+127\.0\.0\.1:\d+,\[::1\]:\d+->5000", after=mark
            )
            await screen.wait_for(r"connections\s+0 open, 1 total; ok 1, refused 0", after=mark)
            await screen.wait_for(r"recent connections", after=at)
            await screen.wait_for(
                rf"127\.0\.0\.1:\d+\s+{port}\s+\d\d:\d\d:\d\d\s+\S+\s+1\.2 KiB\s+1\.2 KiB\s+ok\s+"
                r"local close",
                after=at,
            )
            screen.press(b"\x1b")  # back to the list; down selects web
            at = await screen.wait_for(r"NAME\s+STATE", after=len(screen.text))
            screen.press(b"\x1b[B")
            mark = len(screen.text)
            screen.press(b"r")
            at = await screen.wait_for(r"Restart forward web\? \[y/N\]", after=mark)
            screen.press(b"y")
            at = await screen.wait_for(r"restarted web", after=at)
            screen.press(b"\x1b[A")  # up: back to echo; a restart asked and declined
            screen.press(b"r")
            at = await screen.wait_for(r"Restart forward echo\? \[y/N\]", after=at)
            screen.press(b"n")
            await screen.wait_for(r"restart cancelled", after=at)
            screen.press(b"q")
            with trio.fail_after(10):
                assert await screen.process.wait() == 0
        async with top_in_pty(file, "nope") as screen:  # one line, before any frame
            await screen.wait_for(r"^error: no such forward: nope\r?\n")
            with trio.fail_after(10):
                assert await screen.process.wait() == 1
        logged = await pf("logs", "--file", file, "web", "--no-color")
        assert "web  | stopped" in logged.out  # the restart really happened, in the daemon
        echo_log = await pf("logs", "--file", file, "echo", "--no-color")
        assert "echo | ready" in echo_log.out and "echo | stopped" not in echo_log.out  # declined
        # Windows: no termios — one line, then the line view, on a terminal too
        async with top_in_pty(file, python=("-c", NO_TERMIOS)) as screen:
            at = await screen.wait_for(
                r"^top: no full-screen view on this platform \(no termios\); printing lines\r?\n"
            )
            await screen.wait_for(r"\d\d:\d\d:\d\d echo state=ready pod=echo ", after=at)
            assert "Traceback" not in screen.text


async def test_top_off_a_terminal_and_connection_logs(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    file = write_project(tmp_path / "tp", "tp", ECHO)
    async with daemon(file, sandbox, "tp") as paths:
        port = await _port(paths, "echo")
        for size in (5, 70000):
            assert await echo_through(port, b"y" * size) == b"y" * size
        lines = await pf("top", "-f", file, "-n", "2")
        assert lines.code == 0, lines.err
        pattern = (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d echo state=ready pod=echo "
            r"transport=spdy-over-websocket conns=0/2 in=0B/s out=0B/s "
            r"bytes_in=70005 bytes_out=70005 reconnects=0"
        )
        assert [bool(re.fullmatch(pattern, line)) for line in lines.out.splitlines()] == [True] * 2
        snap = json.loads((await pf("top", "-f", file, "--json", "-n", "1")).out)
        (record,) = snap["forwards"]
        assert record["results"] == {"ok": 2, "refused": 0, "reset": 0, "error": 0}
        assert [c["bytes_out"] for c in record["recent"]] == [5, 70000]

        live = await pf("logs", "--connections", "--no-color", "--file", file)
        expected = [
            rf"echo \| connection from 127\.0\.0\.1:\d+ to {port} ended after \S+: "
            rf"{size} in, {size} out; ok \(local close\)"
            for size in ("5 B", r"68\.4 KiB")
        ]
        got = live.out.splitlines()
        assert len(got) == 2 and all(re.fullmatch(p, g) for p, g in zip(expected, got, strict=True))
        missing = await pf("top", "-f", file, "nope", "-n", "1")
        assert (missing.code, missing.err) == (1, "error: no such forward: nope\n")
    stopped = await pf("logs", "--connections", "--no-color", "--file", file)
    assert stopped.out == live.out  # the same lines from the event log file
    gone = await pf("top", "-f", file, "-n", "1")
    assert (gone.code, gone.err) == (
        1,
        "error: project tp is not running (no daemon, no foreground up)\n",
    )


async def test_daemon_metrics_and_foreground_top(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    file = write_project(tmp_path / "tm", "tm", ECHO, metrics={"listen": "127.0.0.1:0"})
    async with daemon(file, sandbox, "tm") as paths:
        logged = await pf("logs", "--file", file, "--no-color")
        url = re.search(r"Serving metrics on (http://127\.0\.0\.1:\d+/metrics)", logged.out)
        assert url, logged.out
        port = await _port(paths, "echo")
        assert await echo_through(port, b"z" * 300) == b"z" * 300
        text = await trio.to_thread.run_sync(_fetch, url.group(1))
        samples = {
            (s.name, s.labels.get("direction")): s.value
            for family in parser.text_string_to_metric_families(text)
            for s in family.samples
            if s.labels.get("forward") == "echo"
        }
        assert samples[("pfcompose_forward_bytes_total", "in")] == 300
        assert samples[("pfcompose_forward_bytes_total", "out")] == 300

    # A foreground up has a control channel of its own: top finds it.
    fg = write_project(tmp_path / "tf", "tf", ECHO)
    command = [sys.executable, "-m", "pfcompose", "up", "--json", "-f", str(fg),
               "--kubeconfig", str(sandbox.kubeconfig_path),
               "--metrics", "127.0.0.1:0"]  # fmt: skip
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                command, stdout=subprocess.PIPE, check=False, task_status=task_status
            )
        )
        try:
            assert process.stdout is not None
            buffer = b""
            with trio.fail_after(20):
                while b'"state":"ready"' not in buffer:
                    chunk = await process.stdout.receive_some(65536)
                    assert chunk, "up exited early"
                    buffer += chunk
            served = re.search(rb"Serving metrics on (http://127\.0\.0\.1:\d+/metrics)", buffer)
            assert served, buffer  # up --metrics, through the lean runtime
            scrape = await trio.to_thread.run_sync(_fetch, served.group(1).decode())
            assert 'pfcompose_forward_ready{project="tf",forward="echo"} 1' in scrape
            snap = json.loads((await pf("top", "-f", fg, "--json", "-n", "1")).out)
            assert [f["state"] for f in snap["forwards"]] == ["ready"]
            assert control.socket_is_private(control.foreground_paths("tf").socket)
            ps = await pf("ps", "-f", fg, "--format", "json")
            assert [r["status"] for r in json.loads(ps.out)] == ["ready"]
            local = json.loads(ps.out)[0]["listening"][0]["local"]
            port = await pf("port", "-f", fg, "echo", "5000")  # port reaches it too
            assert (port.code, port.out) == (0, f"127.0.0.1:{local}\n"), port.err
            ls = await pf("ls", "-q")
            assert "tf" not in ls.out.split()  # not a daemon: ls does not list it
        finally:
            process.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                assert await process.wait() == 0
    assert not control.foreground_paths("tf").socket.exists()


def _fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())
