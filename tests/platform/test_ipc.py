"""The control channel without AF_UNIX: loopback TCP and a per-project secret.

Forced here with ``ipc.UNIX = False`` (what ``PFCOMPOSE_CONTROL=tcp``,
``PFCOMPOSE_PORTABLE=1`` and a Python without AF_UNIX do), so it runs on Linux.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.daemon import control
from pfcompose.platform import ipc


async def _handler(op: str, args: dict[str, Any], send: control.Reply) -> Any:
    return {"op": op, **args}


@pytest.fixture
def tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipc, "UNIX", False)


async def _receive_all(stream: trio.abc.Stream) -> bytes:
    """Everything until the peer closes (a reset counts: it closed with our bytes unread)."""
    got = b""
    with trio.fail_after(10):
        try:
            while data := await stream.receive_some(65536):
                got += data
        except trio.BrokenResourceError:
            pass
    return got


async def test_tcp_transport_requests_and_private_endpoint_file(tmp_path: Path, tcp: None) -> None:
    paths = control.project_paths("p", tmp_path)
    listener = await control.bind_socket(paths.socket)
    info = os.stat(paths.socket)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert control.socket_is_private(paths.socket)
    record = json.loads(paths.socket.read_text())
    assert record["host"] == "127.0.0.1" and len(record["secret"]) == 64
    assert record["pid"] == os.getpid()
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _handler)
        assert await control.call(paths, "echo", a=1) == {"op": "echo", "a": 1}
        conn = await control.connect(paths)  # several requests on one connection
        try:
            assert await conn.call("x") == {"op": "x"}
            assert await conn.call("y", b=2) == {"op": "y", "b": 2}
        finally:
            await conn.aclose()
        nursery.cancel_scope.cancel()


async def test_a_client_without_the_secret_gets_no_answer(tmp_path: Path, tcp: None) -> None:
    paths = control.project_paths("p", tmp_path)
    listener = await control.bind_socket(paths.socket)
    port = json.loads(paths.socket.read_text())["port"]
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _handler)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:  # a request line where the secret should be
            await stream.send_all(b'{"v": 1, "id": 1, "op": "ps", "args": {}}' + b" " * 40 + b"\n")
            assert await _receive_all(stream) == b""  # closed, unanswered
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:  # a wrong secret of the right length
            await stream.send_all(b"0" * 64 + b"\n" + b'{"v":1,"id":1,"op":"ps"}\n')
            assert await _receive_all(stream) == b""
        nursery.cancel_scope.cancel()


async def test_a_silent_client_is_cut_off(tmp_path: Path, tcp: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(ipc, "ADMIT_TIMEOUT", 0.2)
    paths = control.project_paths("p", tmp_path)
    listener = await control.bind_socket(paths.socket)
    port = json.loads(paths.socket.read_text())["port"]
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _handler)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            assert await _receive_all(stream) == b""  # no hang: the daemon hung up
        nursery.cancel_scope.cancel()


async def test_no_daemon_is_not_running(tmp_path: Path, tcp: None) -> None:
    paths = control.project_paths("p", tmp_path)
    with pytest.raises(control.NotRunning, match=r"^project p is not running$"):
        await control.call(paths, "ps")
    # a stale endpoint file (daemon killed: its port is closed, its lock free)
    listener = await control.bind_socket(paths.socket)
    await listener.aclose()
    assert paths.socket.exists()
    with pytest.raises(control.NotRunning):
        await control.call(paths, "ps")
    assert not paths.socket.exists()  # cleaned up
    paths.socket.write_text("not json")
    with pytest.raises(control.NotRunning):
        await control.call(paths, "ps")


def test_long_names_fit_the_af_unix_limit() -> None:
    base = Path("/var/folders/zz/zyxvpxvq6csfxvn_n0000000000000/T/pfcompose-501")  # macOS-like
    long = "a-very-long-project-name-for-the-payments-team-staging-environment"
    stem = ipc.fit_stem(base, long)
    assert len(os.fsencode(base / f"{stem}.sock")) <= ipc.SOCKET_PATH_MAX <= 103
    assert stem.startswith("a-very-long") and ipc.fit_stem(base, stem) == stem  # idempotent
    assert ipc.fit_stem(base, long + "2") != stem  # distinct names stay distinct
    assert ipc.fit_stem(base, "shop") == "shop"  # short names unchanged
    assert len(ipc.fit_stem(Path("/tmp"), "x" * 200)) == 60


async def test_a_long_project_name_binds_in_a_long_directory(tmp_path: Path) -> None:
    # long enough that the unshortened path exceeds Linux's 108 bytes as well as macOS's 104
    base = tmp_path / ("d" * max(1, 70 - len(os.fsencode(tmp_path))))
    base.mkdir(mode=0o700)
    paths = control.project_paths("payments-" * 8, base)
    assert len(os.fsencode(paths.socket)) <= ipc.SOCKET_PATH_MAX
    listener = await control.bind_socket(paths.socket)
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _handler)
        assert await control.call(paths, "ps") == {"op": "ps"}
        nursery.cancel_scope.cancel()
    assert [p.socket for p in control.list_projects(base)] == [paths.socket]
