"""``up -d`` / ``ps`` / ``down`` over the control channel's other transport, and with a
project name too long for an AF_UNIX path unless shortened (issue 17, macOS)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import trio
from lchelp import echo_through, pf, wait_pid_gone, write_project

from pfcompose.daemon import control
from pfcompose.platform import ipc
from pfcompose.sandbox.server import Sandbox

ECHO = {"echo": {"target": "pod/echo", "ports": [":5000"]}}


async def _cycle(file: Path, sandbox: Sandbox, name: str) -> control.ProjectPaths:
    """up -d, wait ready, bytes through, ps, down; returns the project's paths."""
    up = await pf("up", "-d", "-f", file, "--kubeconfig", sandbox.kubeconfig_path)
    assert up.code == 0, up.err
    paths = control.project_paths(name)
    pid = control.locked_pid(paths.lock)
    assert pid is not None
    try:
        state = await control.call(paths, "wait", until="ready", timeout=20)
        assert state["satisfied"], state
        port = int(state["forwards"][0]["listening"][0]["local"])
        assert await echo_through(port) == b"hello"
        ps = await pf("ps", "-f", file)
        assert ps.code == 0 and "echo" in ps.out and "ready" in ps.out, ps
    finally:
        with trio.CancelScope(shield=True):
            down = await pf("down", "-f", file)
            await wait_pid_gone(pid)
    assert down.code == 0, down.err
    assert not paths.socket.exists()
    return paths


async def test_up_d_ps_down_over_loopback_tcp_with_a_secret(
    sandbox: Sandbox, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ipc.TRANSPORT_VARIABLE, "tcp")  # what Windows uses
    file = write_project(tmp_path / "tcp", "tcpproj", ECHO)
    up = await pf("up", "-d", "-f", file, "--kubeconfig", sandbox.kubeconfig_path)
    assert up.code == 0, up.err
    paths = control.project_paths("tcpproj")
    pid = control.locked_pid(paths.lock)
    assert pid is not None
    try:
        info = os.stat(paths.socket)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        record = json.loads(paths.socket.read_text())
        assert record["pid"] == pid and record["host"] == "127.0.0.1"
        ps = await pf("ps", "-f", file)
        assert ps.code == 0 and "echo" in ps.out, ps.err
    finally:
        with trio.CancelScope(shield=True):
            down = await pf("down", "-f", file)
            await wait_pid_gone(pid)
    assert down.code == 0, down.err
    assert not paths.socket.exists()
    ps = await pf("ps", "-f", file)
    assert (ps.code, ps.err) == (0, "project tcpproj is not running\n")


async def test_a_long_project_name_in_a_long_runtime_dir(
    sandbox: Sandbox, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS's per-user temp dir is ~50 bytes: with a 60-character name the socket path
    # exceeded the 104-byte limit (and here Linux's 108) unless the name is shortened
    deep = tmp_path / ("r" * max(1, 52 - len(os.fsencode(tmp_path))))
    deep.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    name = "payments-platform-staging-eu-west-1-blue-green-canary-rollout"
    file = write_project(tmp_path / "long", name, ECHO)
    paths = await _cycle(file, sandbox, name)
    assert len(os.fsencode(paths.socket)) <= ipc.SOCKET_PATH_MAX
    assert len(os.fsencode(deep / "pfcompose" / f"{name}.sock")) > 108  # it would not fit
    for lock in (deep / "pfcompose").glob("*.lock"):
        assert control.locked_pid(lock) is None  # nothing left running


async def test_a_daemon_the_system_will_not_start_is_one_line(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    # what a platform that cannot create the detached process does (no setsid, no
    # DETACHED_PROCESS, a resource limit): open_process raises OSError
    file = write_project(tmp_path / "ns", "nospawn", ECHO)
    prelude = (
        "import errno, runpy, sys, trio\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError(errno.ENOSYS, 'Function not implemented')\n"
        "trio.lowlevel.open_process = refuse\n"
        "sys.argv = ['pfcompose', *sys.argv[1:]]\n"
        "runpy.run_module('pfcompose', run_name='__main__')\n"
    )
    done = await trio.run_process(
        [sys.executable, "-c", prelude, "up", "-d", "-f", str(file),
         "--kubeconfig", str(sandbox.kubeconfig_path)],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        1, b"", "error: could not start the daemon process: [Errno 38] Function not implemented\n"
    )  # fmt: skip
    assert control.locked_pid(control.project_paths("nospawn").lock) is None
