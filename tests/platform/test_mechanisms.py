"""The portable paths of the other mechanisms, one by one (in-process where possible)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.platform import limits, locks, process, sockets


def test_open_file_target_is_capped_by_maxfilesperproc_as_go_does() -> None:
    inf = -1
    assert limits.target_limit(256, inf, inf, 10240) == 10240  # macOS: hard unlimited
    assert limits.target_limit(256, 8192, inf, 10240) == 8192
    assert limits.target_limit(1024, 20000, inf, None) == 20000  # Linux
    assert limits.target_limit(1024, inf, inf, None) == limits.UNLIMITED_CAP
    assert limits.target_limit(4096, 1024, inf, None) == 4096  # never lowered


class _Refusing:
    RLIMIT_NOFILE, RLIM_INFINITY = 7, -1

    def getrlimit(self, which: int) -> tuple[int, int]:
        return (256, -1)

    def setrlimit(self, which: int, value: tuple[int, int]) -> None:
        raise ValueError("current limit exceeds maximum limit")


def test_a_refused_raise_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(limits, "_resource", lambda: _Refusing())
    monkeypatch.setattr(limits, "_maxfilesperproc", lambda: 10240)
    assert limits.raise_open_file_limit() == 256
    err = capsys.readouterr().err
    assert err == ("pfcompose: warning: the open-files limit stays at 256 (raising it to 10240 "
                   "was refused: current limit exceeds maximum limit); connections beyond it "
                   "will be refused\n")  # fmt: skip


def test_the_pid_file_lock_is_exclusive_and_taken_over_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "KERNEL_LOCK", False)
    path = tmp_path / "p.lock"
    first, second = locks.FileLock(path), locks.FileLock(path)
    assert first.try_acquire() and path.read_text() == f"{os.getpid()}\n"
    assert not second.try_acquire()  # held (by a live pid: ours)
    first.release()
    assert not path.exists()
    assert second.try_acquire()
    second.release()
    # a lock file left by a process that died: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    path.write_text(dead.stdout)
    assert not locks.pid_alive(int(dead.stdout))
    third = locks.FileLock(path)
    assert third.try_acquire() and path.read_text() == f"{os.getpid()}\n"
    third.release()
    path.write_text("")  # no pid: never written whole, stale
    fourth = locks.FileLock(path)
    assert fourth.try_acquire() and path.read_text() == f"{os.getpid()}\n"
    fourth.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp or stale names left


def test_the_kernel_lock_conflicts_across_processes(tmp_path: Path) -> None:
    if not locks.KERNEL_LOCK:
        pytest.skip("no kernel lock in this mode (PFCOMPOSE_PORTABLE)")
    path = tmp_path / "k.lock"
    held = locks.FileLock(path)
    assert held.try_acquire()
    probe = ("import sys; from pathlib import Path; from pfcompose.platform.locks import FileLock;"
             " sys.exit(0 if FileLock(Path(sys.argv[1])).try_acquire() else 5)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", probe, str(path)], env=env,
                          timeout=30).returncode == 5  # fmt: skip
    held.release()


def test_detach_options() -> None:
    assert process.detach_options(windows=False) == {"start_new_session": True}
    flags = process.detach_options(windows=True)["creationflags"]
    assert flags == 0x8 | 0x200  # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP


def test_private_file_without_memfd_is_unlinked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "HAS_MEMFD", False)
    fd = process.private_file()
    try:
        os.write(fd, b"secret")
        assert os.fstat(fd).st_nlink == 0  # nobody can open it by name
        assert os.fstat(fd).st_mode & 0o077 == 0
    finally:
        os.close(fd)


async def test_portable_socket_calls_behave_as_the_descriptor_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        for recv_now, send_now, sendv_now in [
            (sockets.recv_now, sockets.send_now, sockets.sendv_now),  # this mode's
            *_portable_functions(),
        ]:
            with pytest.raises(BlockingIOError):
                recv_now(a, 10)
            assert send_now(b, b"hello") == 5
            parts = [memoryview(b"x" * 10), memoryview(b"y" * 20)]
            assert sendv_now(b, parts) == 30
            await trio.lowlevel.wait_readable(a)
            got = b""
            while len(got) < 35:
                got += recv_now(a, 100)
            assert got == b"hello" + b"x" * 10 + b"y" * 20
        assert sockets.writable_now(b) in (True, False)
        a.close()
        with pytest.raises(trio.ClosedResourceError):
            _portable_functions()[0][0](a, 10)


def _portable_functions() -> list[tuple[Any, Any, Any]]:
    """The portable recv/send/sendv, whatever this process's mode."""
    import importlib.util

    spec = importlib.util.find_spec("pfcompose.platform.sockets")
    assert spec is not None and spec.loader is not None
    saved = os.environ.get("PFCOMPOSE_PORTABLE")
    import pfcompose.platform.host as seam  # where the seam's modules read it

    old = seam.PORTABLE
    seam.PORTABLE = True
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        seam.PORTABLE = old
        if saved is not None:
            os.environ["PFCOMPOSE_PORTABLE"] = saved
    assert not module.DIRECT_FD
    return [(module.recv_now, module.send_now, module.sendv_now)]


@pytest.mark.parametrize("windows", [False, True])
def test_listeners_reuse_addresses_as_go_does_but_not_on_windows(
    monkeypatch: pytest.MonkeyPatch, windows: bool
) -> None:
    # Go sets SO_REUSEADDR before listen on POSIX only: on Windows it would let a second
    # socket bind a port another one listens on (the forward's port would be shared)
    from pfcompose.config.addresses import ListenAddress
    from pfcompose.config.listen import listen_socket

    monkeypatch.setattr(sockets, "WINDOWS", windows)
    sock = listen_socket(ListenAddress("127.0.0.1", "tcp4", "all"), 0)
    with sock:
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    assert bool(reuse) is not windows


async def test_the_metrics_listener_reuses_addresses_but_not_on_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pfcompose.up.metrics import bind_metrics

    for windows in (False, True):
        monkeypatch.setattr(sockets, "WINDOWS", windows)
        listener = await bind_metrics("127.0.0.1:0")
        async with listener:
            reuse = listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert bool(reuse) is not windows
