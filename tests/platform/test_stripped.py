"""pfcompose without Linux's extras: every module imports, and a forward carries bytes.

The names a Linux build of Python has and macOS/Windows lack are removed in the
child (strip_linux.py) before pfcompose is imported; the platform seam must notice
on its own (no PFCOMPOSE_PORTABLE) and take the portable paths.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pfcompose.sandbox.pytest_plugin import fast_path_only, start_sandbox_process

STRIP = Path(__file__).with_name("strip_linux.py")
STATE = {
    "pods": [{"name": "echo", "labels": {"app": "echo"},
              "ports": [{"containerPort": 5000, "serve": "echo"},
                        {"containerPort": 8080, "serve": "http"}]}],
}  # fmt: skip
# the http health check carries its probe over an in-process socket pair (no AF_UNIX here)
FILE = """\
forwards:
  e:
    selector: app=echo
    ports: [':5000']
    addresses: [127.0.0.1]
  h:
    target: pod/echo
    ports: [':8080']
    addresses: [127.0.0.1]
    healthcheck: {type: http, path: /, interval: 1s}
"""


def _env() -> dict[str, str]:
    # PFCOMPOSE_LEAN=0: the runtime stays in the stripped process (exec starts a fresh one)
    env = {k: v for k, v in os.environ.items() if k != "PFCOMPOSE_PORTABLE"}
    return {**env, "PFCOMPOSE_LEAN": "0"}


def test_every_module_imports_and_every_fast_path_is_off() -> None:
    out = subprocess.run([sys.executable, str(STRIP), "--imports-only"], env=_env(),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    caps = json.loads(out.stdout)
    assert caps == {
        "direct_fd_io": False, "poll": False, "notsent_lowat": False, "mallopt": False,
        "exec_handover": True,  # execv itself is POSIX; only memfd is gone
        "flock": False, "unix_control_socket": False, "rlimit": False, "setsid": True,
    }  # fmt: skip


def test_help_works_without_resource_and_fcntl() -> None:
    # issue 17: on Windows ``pfcompose --help`` died with "No module named 'resource'"
    out = subprocess.run([sys.executable, str(STRIP), "--help"], env=_env(),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and out.stderr == ""


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < len(payload) and (data := s.recv(65536)):
            got += data
    return got


def test_a_forward_carries_bytes_with_the_portable_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PFCOMPOSE_PORTABLE", raising=False)
    with start_sandbox_process(STATE, tmp_path / "sb",
                               command=[sys.executable, str(STRIP)]) as sandbox:  # fmt: skip
        _up_and_round_trip(tmp_path, str(sandbox.kubeconfig_path))


def _lines_until(
    proc: subprocess.Popen[bytes], done: Callable[[list[str]], bool], timeout: float = 60
) -> list[str]:
    """``up``'s stdout lines until ``done(lines)``; fails at ``timeout`` or if up exits."""
    assert proc.stdout is not None
    deadline, lines, buf = time.monotonic() + timeout, [], b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not done(lines):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and sel.select(remaining), f"timed out; lines: {lines}"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"up exited: {lines} {proc.stderr.read() if proc.stderr else b''!r}"
            *complete, buf = (buf + chunk).split(b"\n")
            lines += [line.decode() for line in complete]
    return lines


def _forward_port(lines: list[str]) -> int:
    """The local port of forward ``e`` from its ``Forwarding from 127.0.0.1:N`` line."""
    line = next(x for x in lines if x.startswith("e | Forwarding from"))
    return int(line.split("127.0.0.1:")[1].split()[0])


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C ``up`` and expect a clean exit (0)."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``up`` if a failed assertion left it running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _up_and_round_trip(tmp_path: Path, kubeconfig: str) -> None:
    (tmp_path / "forwards.yaml").write_text(FILE)
    proc = subprocess.Popen([sys.executable, str(STRIP), "up", "--kubeconfig", kubeconfig],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        lines = _lines_until(proc, lambda lines: any(
            line.startswith("h | health: ") and "starting" not in line for line in lines
        ) and any(line.startswith("e | ready ") for line in lines))  # fmt: skip
        assert "h | health: healthy" in lines, lines
        port = _forward_port(lines)
        payload = os.urandom(3 << 20)  # several socket buffers: partial sends, joined writes
        assert _echo(port, payload) == payload
        assert _echo(port, b"small") == b"small"
        _interrupt(proc)
    finally:
        _reap(proc)


def test_pfcompose_portable_turns_every_fast_path_off() -> None:
    # setsid has no portable twin on POSIX (start_new_session is all of POSIX); Windows
    # detaches with DETACHED_PROCESS instead (test_mechanisms.py::test_detach_options)
    code = (
        "import json; from pfcompose.platform import capabilities, limits, memory; "
        "print(json.dumps({**capabilities(), 'calls': [memory.keep_freed_buffers(), "
        "memory.release_free_memory(), limits.raise_open_file_limit()]}))"
    )
    env = {**os.environ, "PFCOMPOSE_PORTABLE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    caps = json.loads(out.stdout)
    assert caps.pop("setsid") is True
    assert caps.pop("calls") == [False, False, -1]  # the portable twins: nothing done
    assert caps and not any(caps.values()), caps


# macOS: execve exists, memfd_create does not; the plan travels in an unlinked 0600 file
NO_MEMFD = ("import os, runpy, sys; del os.memfd_create; sys.argv = ['pfcompose', *sys.argv[1:]]; "
            "runpy.run_module('pfcompose', run_name='__main__')")  # fmt: skip


@fast_path_only
@pytest.mark.skipif(
    not hasattr(os, "memfd_create") or not Path("/proc/self/fd").exists(),
    reason="removes memfd_create and reads the runtime's /proc entries",
)
def test_the_lean_hand_over_without_memfd_uses_a_private_file(tmp_path: Path) -> None:
    with start_sandbox_process(STATE, tmp_path / "sb") as sandbox:
        (tmp_path / "forwards.yaml").write_text(FILE)
        env = {
            k: v for k, v in os.environ.items() if k not in ("PFCOMPOSE_LEAN", "PFCOMPOSE_PORTABLE")
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", NO_MEMFD, "up", "--kubeconfig", str(sandbox.kubeconfig_path)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            lines = _lines_until(proc, lambda ls: any(x.startswith("e | ready ") for x in ls))
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:3] == [b"-S", b"-c"], argv  # the same PID is the lean runtime now
            fds = [
                os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                for fd in os.listdir(f"/proc/{proc.pid}/fd")
            ]
            assert not [fd for fd in fds if "pfcompose-up" in fd], fds  # read and closed
            assert _echo(_forward_port(lines), b"no memfd") == b"no memfd"
            _interrupt(proc)
        finally:
            _reap(proc)
