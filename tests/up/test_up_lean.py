"""``pfcompose up`` as a process: it validates, then replaces itself with the lean runtime.

The runtime must forward exactly as before while carrying none of the command line's
libraries (pydantic, yaml, the kubernetes package): checked through /proc, not trusted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_up_cli import Up

from pfcompose.sandbox.pytest_plugin import SandboxProcess, fast_path_only, start_sandbox_process

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="reads the runtime's memory map from /proc"
)

STATE = {
    "pods": [{"name": "echo", "labels": {"app": "echo"},
              "ports": [{"containerPort": 5000, "serve": "echo"}]}],
}  # fmt: skip
FILE = "forwards:\n  e:\n    selector: app=echo\n    ports: [':5000']\n    addresses: [127.0.0.1]\n"


@pytest.fixture
def sandbox_proc(tmp_path: Path) -> SandboxProcess:
    with start_sandbox_process(STATE, tmp_path / "sb") as proc:
        yield proc


def _echo(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@fast_path_only
def test_up_runs_lean_and_forwards(tmp_path: Path, sandbox_proc: SandboxProcess) -> None:
    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--kubeconfig", str(sandbox_proc.kubeconfig_path)], tmp_path)
    try:
        port = int(up.wait_line(r"^e \| Forwarding from 127\.0\.0\.1:(\d+) -> 5000$")[1])
        up.wait_line(r"^e \| ready \(pod echo via spdy-over-websocket\)$")
        assert _echo(port, b"lean") == b"lean"
        pid = up.proc.pid  # the same process: exec, not a child
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-S", b"-c"], argv
        maps = _mapped_files(pid)
        for library in ("pydantic_core", "_yaml", "_ruamel"):
            assert library not in maps, f"{library} is loaded in the runtime"
        # the plan's private file (it holds credentials) was read and closed
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [fd for fd in fds if "pfcompose-up" in fd], fds
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=15) == 0
        assert up.proc.stderr is not None
        assert up.proc.stderr.read() == b""
    finally:
        up.stop()


@fast_path_only
def test_kubeconfig_changes_are_evaluated_in_a_helper_not_in_the_runtime(
    tmp_path: Path, sandbox_proc: SandboxProcess
) -> None:
    """The kubeconfig changes while up runs: the runtime evaluates it again (in a helper
    process) on the next connect, reports what is wrong with it, recovers once it is
    fixed, and never loads the kubernetes package itself."""
    kubeconfig = tmp_path / "kc"
    good = sandbox_proc.kubeconfig_path.read_text()
    kubeconfig.write_text(good)
    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--kubeconfig", str(kubeconfig), "--json"], tmp_path)  # errors on stdout too
    try:
        port = int(up.wait_line(r'"local":(\d+)')[1])
        up.wait_line(r'"message":"ready \(pod echo via ')
        kubeconfig.write_text(good.replace("current-context: pfcompose-sandbox",
                                           "current-context: renamed"))  # fmt: skip
        sandbox_proc.admin("POST", "/_sandbox/pods/default/echo/replace", {})
        up.wait_line(r'"message":"context \\"renamed\\" not found in kubeconfig"')
        kubeconfig.write_text(good)
        up.wait_line(r'"message":"ready \(pod echo-\S+ via ')
        assert _echo(port, b"after") == b"after"
        maps = _mapped_files(up.proc.pid)
        assert "_yaml" not in maps and "pydantic_core" not in maps
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=15) == 0
    finally:
        up.stop()


def test_a_kubeconfig_that_cannot_work_is_exit_2_before_anything_binds(tmp_path: Path) -> None:
    (tmp_path / "forwards.yaml").write_text(FILE)
    result = subprocess.run(
        [sys.executable, "-m", "pfcompose", "up", "--kubeconfig", str(tmp_path / "missing")],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode() == f"error: e: kubeconfig not found: {tmp_path / 'missing'}\n"
    assert result.stdout == b""


def test_an_unknown_context_names_the_forwards_that_use_it(
    tmp_path: Path, sandbox_proc: SandboxProcess
) -> None:
    (tmp_path / "forwards.yaml").write_text(
        FILE + "  other:\n    target: pod/echo\n    context: elsewhere\n    ports: [':5000']\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pfcompose", "up", "--kubeconfig",
         str(sandbox_proc.kubeconfig_path)],
        cwd=tmp_path, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode() == (
        'error: other: context "elsewhere" not found in kubeconfig\n'
    )


def test_pfcompose_lean_0_keeps_up_in_the_command_line_process(
    tmp_path: Path, sandbox_proc: SandboxProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFCOMPOSE_LEAN", "0")
    (tmp_path / "forwards.yaml").write_text(FILE)
    up = Up(["--kubeconfig", str(sandbox_proc.kubeconfig_path)], tmp_path)
    try:
        up.wait_line(r"^e \| ready \(pod echo via ")
        argv = Path(f"/proc/{up.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-m", b"pfcompose"]
        assert "pydantic_core" in _mapped_files(up.proc.pid)
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=15) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            up.stop()
