"""``pfcompose up`` as a user runs it: a process, its output lines, its exit codes."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILE = """\
forwards:
  web:
    target: deploy/web
    ports: [":http"]
  echo:
    target: svc/echo
    ports: [":80"]
"""


class Up:
    """A ``pfcompose up`` child whose stdout lines are read without sleeping."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pfcompose", "up", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[str] = []
        self._buf = b""

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                for line in self.lines:
                    if m := re.search(pattern, line):
                        self.lines.remove(line)
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise AssertionError(f"no line matching {pattern!r} in {self.lines}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"up exited; lines: {self.lines}")
                self._buf += chunk
                *done, self._buf = self._buf.split(b"\n")
                self.lines += [d.decode() for d in done]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while data := s.recv(65536):
            out += data
    return out


def test_up_sandbox_serves_prints_kubectl_lines_and_stops_cleanly(tmp_path: Path) -> None:
    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--sandbox"], tmp_path)
    try:
        port = int(up.wait_line(r"^web\s+\| Forwarding from 127\.0\.0\.1:(\d+) -> http$")[1])
        up.wait_line(rf"^web\s+\| Forwarding from \[::1\]:{port} -> http$")
        up.wait_line(r"^web\s+\| ready \(pod web-\S+ via spdy-over-websocket\)$")
        up.wait_line(r"^echo\s+\| ready \(pod echo-\S+ via spdy-over-websocket\)$")
        answer = _get(port)
        assert answer.startswith(b"HTTP/1.1 200") and b"web-" in answer
        up.wait_line(rf"^web\s+\| Handling connection for {port}$")
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=15) == 0
        assert up.proc.stderr is not None
        assert b"Traceback" not in up.proc.stderr.read()
    finally:
        up.stop()


def test_up_exit_status_2_on_a_bad_file(tmp_path: Path) -> None:
    bad = "forwards:\n  web:\n    target: pod/x\n    ports: [0]\n"
    (tmp_path / "forwards.yaml").write_text(bad)
    result = subprocess.run(
        [sys.executable, "-m", "pfcompose", "up"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "forwards.yaml:4:13: forwards.web.ports[0]: remote port must be > 0"
    )


def test_up_exit_status_1_when_no_forward_can_listen(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        (tmp_path / "forwards.yaml").write_text(
            f"forwards:\n  web:\n    target: deploy/web\n    ports: ['{port}:http']\n"
            "    addresses: [127.0.0.1]\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "pfcompose", "up", "--sandbox"],
            cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
    finally:
        blocker.close()
    assert result.returncode == 1, result
    err = result.stderr.decode()
    assert (
        f"web     | Unable to listen on port {port}: Listeners failed to create with the "
        f"following errors: [unable to create listener: Error listen tcp4 127.0.0.1:{port}: "
        "bind: address already in use]"
    ) in err
    assert "Traceback" not in err
    out = result.stdout.decode()
    failed = f"web     | failed: unable to listen on any of the requested ports: [{{{port} http}}]"
    assert failed in out + err


@pytest.mark.parametrize("flag", ["--json"])
def test_up_json_events(tmp_path: Path, flag: str) -> None:
    import json

    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--sandbox", flag], tmp_path)
    try:
        line = up.wait_line(r'"kind":"state".*"state":"ready"').string
        event = json.loads(line)
        assert event["forward"] in ("web", "echo") and event["kind"] == "state"
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=15) == 0
    finally:
        up.stop()


# -- QA regressions: a closed output and a late Ctrl-C end `up` quietly -------------------


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_up_stops_quietly_when_its_reader_goes_away(tmp_path: Path, flag: list[str]) -> None:
    """``pfcompose up --sandbox | head -3``: stdout closes; up stops with 1, no traceback."""
    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--sandbox", *flag], tmp_path)
    try:
        assert up.proc.stdout is not None and up.proc.stderr is not None
        port = int(up.wait_line(r"Forwarding from 127\.0\.0\.1:(\d+) -> http")[1])
        up.wait_line(r"ready \(pod web-")
        up.proc.stdout.close()  # the reader is gone while every forward runs
        with contextlib.suppress(OSError):
            _get(port)  # a "Handling connection" line is the next write
        assert up.proc.wait(timeout=30) == 1
        assert up.proc.stderr.read() == b""
    finally:
        up.stop()


def test_the_sinks_report_a_closed_reader_once_and_drop_later_lines() -> None:
    import io

    from pfcompose.up.events import Event, Kind
    from pfcompose.up.ui import JsonSink, TerminalSink

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    for make in (
        lambda cb: TerminalSink(["db"], out=Closed(), err=Closed(), on_closed=cb),
        lambda cb: JsonSink(Closed(), on_closed=cb),
    ):
        calls: list[str] = []
        sink = make(functools.partial(calls.append, "closed"))
        sink(Event("db", Kind.STATE, "resolving"))
        sink(Event("db", Kind.ERROR, "boom"))
        assert calls == ["closed"]
    with pytest.raises(BrokenPipeError):  # without a callback (logs): click's EPIPE exit
        TerminalSink(["db"], out=Closed())(Event("db", Kind.STATE, "resolving"))


UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: c
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
contexts: [{name: c, context: {cluster: c}}]
"""


def test_a_ctrl_c_during_the_final_teardown_exits_130_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio
    from click.testing import CliRunner

    from pfcompose.cli import main

    def interrupted_teardown(*args: object) -> None:
        raise BaseExceptionGroup("nursery", [BaseExceptionGroup("inner", [KeyboardInterrupt()])])

    (tmp_path / "forwards.yaml").write_text(FILE)
    (tmp_path / "kc").write_text(UNREACHABLE_KUBECONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trio, "run", interrupted_teardown)
    result = CliRunner().invoke(main, ["up", "--kubeconfig", str(tmp_path / "kc")])
    assert (result.exit_code, result.output) == (130, "")
    assert isinstance(result.exception, SystemExit)  # not the KeyboardInterrupt group


def test_ctrl_c_in_any_command_is_exit_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from pfcompose import cli
    from pfcompose.commands import common

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if Ctrl-C landed while the file was being read

    monkeypatch.setattr(common, "load_plan", interrupted)
    (tmp_path / "forwards.yaml").write_text("forwards: {}\n")
    result = CliRunner().invoke(cli.main, ["config", "-f", str(tmp_path / "forwards.yaml")])
    assert result.exit_code == 130
    assert "Aborted" not in result.output
