"""Control channel, event log, ports file and ps rendering, without a daemon process."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from pfcompose.commands.lifecycle_cmd import parse_since
from pfcompose.daemon import control
from pfcompose.daemon.eventlog import EventLog, EventLogFile, event_from_json, read_log_file
from pfcompose.daemon.status import (
    format_bytes,
    format_duration,
    render_json,
    render_plain,
    state_text,
    status_record,
)
from pfcompose.platform import ipc
from pfcompose.up.connection import Traffic
from pfcompose.up.events import Event, Kind
from pfcompose.up.forward import ForwardStatus, Listening, State
from pfcompose.up.portsenv import PortsEnvFile, env_key

# -- control: directory, socket, protocol ------------------------------------------------


def test_runtime_dir_prefers_xdg_and_is_private(tmp_path: Path) -> None:
    path = control.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert path == tmp_path / "pfcompose"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_runtime_dir_falls_back_to_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    path = control.runtime_dir({})
    assert path == tmp_path / f"pfcompose-{os.getuid()}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_runtime_dir_tightens_loose_permissions(tmp_path: Path) -> None:
    (tmp_path / "pfcompose").mkdir(mode=0o755)
    os.chmod(tmp_path / "pfcompose", 0o755)
    path = control.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_project_paths_are_per_project(tmp_path: Path) -> None:
    a = control.project_paths("shop", tmp_path)
    b = control.project_paths("Other Project!", tmp_path)
    assert a.socket == tmp_path / "shop.sock"
    assert a.lock == tmp_path / "shop.lock"
    assert b.socket == tmp_path / "other_project_.sock"


async def _echo_handler(op: str, args: dict[str, Any], send: control.Reply) -> Any:
    if op == "stream":
        for i in range(3):
            await send({"event": {"n": i}})
        return {"sent": 3}
    if op == "fail":
        raise control.ControlError("nope: one line")
    if op == "echo":
        return args
    raise control.ControlError(f"unknown request {op!r}")


async def test_socket_mode_protocol_and_streaming(tmp_path: Path) -> None:
    paths = control.project_paths("p", tmp_path)
    listener = await control.bind_socket(paths.socket)
    assert control.socket_is_private(paths.socket)  # pytest's tmp_path is 0700
    assert stat.S_IMODE(os.stat(paths.socket).st_mode) == 0o600
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _echo_handler)
        conn = await control.connect(paths)
        try:
            assert await conn.call("echo", a=1) == {"a": 1}
            messages = [m async for m in await conn.request("stream")]
            assert messages[:3] == [{"v": 1, "id": 2, "event": {"n": i}} for i in range(3)]
            assert messages[3] == {"result": {"sent": 3}}
            with pytest.raises(control.ControlError, match=r"^nope: one line$"):
                await conn.call("fail")
            assert await conn.call("echo") == {}  # the connection survives an error answer
        finally:
            await conn.aclose()
        nursery.cancel_scope.cancel()


async def test_wrong_protocol_version_is_refused(tmp_path: Path) -> None:
    paths = control.project_paths("p", tmp_path)
    listener = await control.bind_socket(paths.socket)
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve, listener, _echo_handler)
        stream = await ipc.connect_control(paths.socket)  # AF_UNIX, or TCP + secret
        async with stream:
            await stream.send_all(b'{"v": 2, "id": 7, "op": "echo"}\n')
            reader = control.LineReader(stream)
            answer = json.loads(await reader.readline() or b"")
        nursery.cancel_scope.cancel()
    assert answer == {
        "v": 1,
        "id": 7,
        "ok": False,
        "done": True,
        "error": "unsupported control protocol version 2 (this daemon speaks 1); "
        "run the same pfcompose version",
    }


async def test_stale_socket_is_detected_and_removed(tmp_path: Path) -> None:
    paths = control.project_paths("p", tmp_path)
    # A socket file left by a killed daemon: bound, never listening, lock free.
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(paths.socket))
    leftover.close()
    assert paths.socket.exists()
    with pytest.raises(control.NotRunning, match=r"^project p is not running$"):
        await control.connect(paths)
    assert not paths.socket.exists()


def test_a_held_lock_protects_the_socket(tmp_path: Path) -> None:
    paths = control.project_paths("p", tmp_path)
    paths.socket.write_text("")
    lock = control.DaemonLock(paths.lock)
    assert lock.try_acquire()
    try:
        assert control.is_locked(paths.lock)
        assert not control.DaemonLock(paths.lock).try_acquire()
        assert control.clean_stale(paths) is False
        assert paths.socket.exists()
    finally:
        lock.release()
    assert control.clean_stale(paths) is True
    assert not paths.socket.exists()


# -- event log -----------------------------------------------------------------------------


def _event(forward: str, message: str, t: float, kind: Kind = Kind.STATE) -> Event:
    return Event(forward, kind, message, time=t, data={"state": message})


def test_ring_is_bounded_and_filters() -> None:
    log = EventLog(capacity=3)
    for i in range(5):
        log(_event("a" if i % 2 else "b", f"m{i}", float(i)))
    log(_event("", "stopping", 5.0))
    assert [r["message"] for r in log.snapshot()] == ["m3", "m4", "stopping"]
    assert [r["message"] for r in log.snapshot(names=["a"])] == ["m3", "stopping"]
    assert [r["message"] for r in log.snapshot(since=4.0)] == ["m4", "stopping"]


async def test_followers_get_later_events_and_slow_ones_are_cut_off() -> None:
    log = EventLog(capacity=10)
    channel = log.follow(["a"])
    log(_event("a", "one", 1.0))
    log(_event("b", "other", 2.0))
    assert channel.receive_nowait()["message"] == "one"
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()
    slow = log.follow()
    for i in range(1001):  # FOLLOW_BUFFER is 1000
        log(_event("a", str(i), float(i)))
    received = [record async for record in slow]  # ends: the sender was closed
    assert len(received) == 1000
    log.close()


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLogFile(path, max_bytes=200, backups=2)
    for i in range(12):
        log.write({"time": float(i), "forward": "a", "kind": "state", "message": f"event {i:02d}"})
    log.close()
    sizes = [p.stat().st_size for p in (path, path.with_name("events.jsonl.1"))]
    assert all(size <= 200 for size in sizes)
    assert not path.with_name("events.jsonl.3").exists()
    messages = [r["message"] for r in read_log_file(path, backups=2)]
    # Oldest events rotated away; what is left is contiguous and in order.
    numbers = [int(m.split()[1]) for m in messages]
    assert numbers == list(range(numbers[0], 12))
    assert numbers[0] > 0


def test_event_round_trip() -> None:
    event = Event("db", Kind.LISTENING, "Forwarding from 127.0.0.1:1 -> 2", 3.5, {"local": 1})
    assert event_from_json(event.to_json()) == event


# -- ports file ----------------------------------------------------------------------------


def test_env_key_upper_cases_and_replaces() -> None:
    assert env_key("db", 5432) == "PFCOMPOSE_DB_5432"
    assert env_key("my-api.v2", "http-alt") == "PFCOMPOSE_MY_API_V2_HTTP_ALT"


def _listening(forward: str, address: str, local: int, remote: int | str) -> Event:
    text = f"Forwarding from {address}:{local} -> {remote}"
    return Event(forward, Kind.LISTENING, text, data={"local": local, "remote": remote})


def test_ports_file_tracks_listening_and_stopped(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ports.env"
    ports = PortsEnvFile(path, "shop")
    ports(_listening("db", "127.0.0.1", 40001, 5432))
    ports(_listening("db", "::1", 40001, 5432))
    inode = path.stat().st_ino
    ports(_listening("db", "::1", 40001, 5432))  # nothing changed: no rewrite
    assert path.stat().st_ino == inode
    ports(_listening("web-1", "127.0.0.1", 40002, "http"))
    assert path.read_text() == (
        "# pfcompose: actual local ports of project shop; rewritten on change\n"
        "PFCOMPOSE_DB_5432=40001\n"
        "PFCOMPOSE_WEB_1_HTTP=40002\n"
    )
    assert path.stat().st_ino != inode  # replaced by rename, never edited in place
    ports(Event("db", Kind.STATE, "stopped", data={"state": "stopped"}))
    assert path.read_text().splitlines()[1:] == ["PFCOMPOSE_WEB_1_HTTP=40002"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["ports.env"]  # no temp files
    ports.remove()
    assert not path.exists()


def test_ports_file_goes_when_the_project_stops(tmp_path: Path) -> None:
    """At the project's ``stopping`` its listeners close: the file goes at once (so
    before ``down`` answers, foreground or daemon), and the forwards' ``stopped``
    events that follow do not write it back."""
    path = tmp_path / "ports.env"
    ports = PortsEnvFile(path, "shop")
    ports(_listening("db", "127.0.0.1", 40001, 5432))
    ports(_listening("web", "127.0.0.1", 40002, 8080))
    ports(Event("db", Kind.STATE, "stopping", data={"state": "stopping"}))  # not the project's
    assert path.exists()
    ports(Event("", Kind.STATE, "stopping", data={"state": "stopping"}))
    assert not path.exists()
    ports(Event("db", Kind.STATE, "stopped", data={"state": "stopped"}))
    ports(_listening("web", "::1", 40002, 8080))
    assert not path.exists()


# -- ps rendering ----------------------------------------------------------------------------


def _status(**changes: Any) -> ForwardStatus:
    status = ForwardStatus(name="db", started=1000.0)
    for key, value in changes.items():
        setattr(status, key, value)
    return status


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"state": State.READY}, "ready"),
        ({"state": State.RECONNECTING, "attempt": 3, "reconnects": 7}, "reconnecting 3"),
        ({"state": State.RECONNECTING, "waiting_for_pod": True}, "waiting for pod"),
        ({"state": State.RESOLVING, "waiting_for_pod": True}, "waiting for pod"),
        ({"state": State.READY, "waiting_for_pod": True}, "ready"),
        ({"state": State.FAILED, "detail": "unable to listen"}, "failed: unable to listen"),
        ({"state": State.CONNECTING}, "connecting"),
    ],
)
def test_state_text(changes: dict[str, Any], text: str) -> None:
    assert state_text(_status(**changes)) == text


def test_plain_table_and_json() -> None:
    status = _status(
        state=State.READY,
        pod="postgres-0",
        namespace="shop",
        transport="spdy",
        listening=[Listening("127.0.0.1", 15432, 5432), Listening("::1", 15432, 5432)],
        connections_open=1,
        connections_total=4,
        reconnects=2,
        ready_since=1000.0,
        traffic=Traffic(bytes_in=1536, bytes_out=12),
    )
    record = status_record(status, None, now=1075.0)
    assert render_plain([record]) == (
        "NAME   TARGET   POD               PORTS                               STATE   "
        "HEALTH   TRANSPORT   CONNS   IN        OUT    RECONNECTS   UPTIME   LAST ERROR\n"
        "db     -        shop/postgres-0   127.0.0.1:15432,[::1]:15432->5432   ready   "
        "-        spdy        1/4     1.5 KiB   12 B   2            1m15s    -\n"
    )
    assert json.loads(render_json([record]))[0]["status"] == "ready"
    assert json.loads(render_json([record]))[0]["uptime"] == 75.0


def test_formatters() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 5 * 1024 * 1024)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
    ]
    assert [format_duration(s) for s in (None, 5, 75, 3600 * 2 + 180, 86400 * 3 + 3600)] == [
        "-",
        "5s",
        "1m15s",
        "2h03m",
        "3d01h",
    ]


def test_parse_since() -> None:
    assert parse_since("10m", now=10_000.0) == 9_400.0
    assert parse_since("1h30m", now=10_000.0) == 10_000.0 - 5400
    assert parse_since("2024-05-01T12:00:00+00:00") == 1714564800.0


# -- shell completion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("pfcompose ps ", "2", "plain,db\nplain,web-1\n"),
        ("pfcompose up w", "2", "plain,web-1\n"),
        ("pfcompose logs db ", "3", "plain,web-1\n"),
    ],
)
def test_forward_names_complete_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: str, cword: str, expected: str
) -> None:
    from click.testing import CliRunner

    from pfcompose.cli import main

    (tmp_path / "forwards.yaml").write_text(
        "forwards:\n"
        "  db: {target: pod/postgres-0, ports: ['5432']}\n"
        "  web-1: {selector: {app: web}, ports: ['8080:80']}\n"
    )
    monkeypatch.chdir(tmp_path)
    env = {"_PFCOMPOSE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
    result = CliRunner().invoke(main, [], env=env, prog_name="pfcompose")
    assert (result.exit_code, result.output) == (0, expected)


# -- the supervisor's stop line (QA regression) ---------------------------------------------


@pytest.mark.parametrize(
    ("persistent", "expected"),
    [
        (True, "stopping"),  # the daemon's log: stopped by `down`, no Ctrl-C to press
        (False, "Gracefully stopping... (press Ctrl+C again to force)"),  # foreground up
    ],
)
async def test_the_stop_line_suits_who_runs_the_supervisor(
    tmp_path: Path, persistent: bool, expected: str
) -> None:
    from pfcompose.config import load_plan
    from pfcompose.kube import KubeConfigError
    from pfcompose.up.supervisor import Supervisor

    (tmp_path / "forwards.yaml").write_text(
        "forwards:\n  db: {target: pod/db, ports: [':5432'], addresses: [127.0.0.1]}\n"
    )
    plan = load_plan([tmp_path / "forwards.yaml"])

    async def no_cluster(spec: object) -> Any:
        raise KubeConfigError("no kubeconfig found")

    events: list[Event] = []
    supervisor = Supervisor(
        plan.forwards.values(), no_cluster, emit=events.append, persistent=persistent
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: supervisor.run(
                handle_signals=False, task_status=task_status))  # fmt: skip
            supervisor.request_stop()
    assert [e.message for e in events if e.forward == ""] == [expected]
