"""``up -d`` / ``ps`` / ``logs`` / ``down`` / ``restart`` / ``ls`` against the sandbox.

The CLI runs as real processes (the daemon must outlive the ``up -d`` that started
it); readiness is awaited through the daemon's pipe line and its control socket,
never by sleeping. Every test stops what it starts in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from lchelp import echo_through, pf, wait_pid_gone, write_project

from pfcompose.daemon import control
from pfcompose.daemon.eventlog import read_log_file
from pfcompose.sandbox.server import Sandbox

TWO = {
    "echo": {"target": "pod/echo", "ports": [":5000"]},
    "web": {"target": "deployment/web", "ports": [":8080"]},
}


@asynccontextmanager
async def project(
    file: Path, sb: Sandbox, *extra: str, expect: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """``up -d`` the file; always ``down`` it (and wait for the daemon to exit) afterwards."""
    result = await pf("up", "-d", "-f", file, "--kubeconfig", sb.kubeconfig_path, *extra)
    assert result.code == expect, result.err
    paths = control.project_paths(_name(file))
    pid = control.locked_pid(paths.lock)
    try:
        yield {"result": result, "paths": paths, "pid": pid}
    finally:
        with trio.CancelScope(shield=True):
            await pf("down", "-f", file)
            if pid is not None:
                await wait_pid_gone(pid)


def _name(file: Path) -> str:
    return str(re.search(r"^name: (\S+)$", file.read_text(), re.M).group(1))  # type: ignore[union-attr]


async def _ready(paths: control.ProjectPaths) -> list[dict[str, Any]]:
    state = await control.call(paths, "wait", until="ready", timeout=20)
    assert state["satisfied"], state
    records: list[dict[str, Any]] = state["forwards"]
    return records


def _port(records: list[dict[str, Any]], name: str) -> int:
    record = next(r for r in records if r["name"] == name)
    return int(record["listening"][0]["local"])


async def test_up_d_ps_logs_down_cycle(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "alpha", "alpha", TWO)
    async with project(file, sandbox) as started:
        out = started["result"].out.splitlines()
        assert out[0].split() == [
            "NAME", "TARGET", "POD", "PORTS", "STATE", "HEALTH", "TRANSPORT", "CONNS", "IN", "OUT",
            "RECONNECTS", "UPTIME", "LAST", "ERROR",
        ]  # fmt: skip
        assert [line.split()[0] for line in out[1:]] == ["echo", "web"]
        assert started["pid"] is not None and started["pid"] != os.getpid()

        records = await _ready(started["paths"])
        port = _port(records, "echo")
        assert await echo_through(port) == b"hello"

        ps = await pf("ps", "-f", file)
        assert ps.code == 0
        echo_row = next(line for line in ps.out.splitlines() if line.startswith("echo "))
        assert re.fullmatch(
            rf"echo\s+pod/echo\s+default/echo\s+127\.0\.0\.1:{port},\[::1\]:{port}->5000\s+"
            r"ready\s+-\s+\S+\s+[01]/1\s+5 B\s+5 B\s+0\s+\d+s\s+-",
            echo_row,
        ), echo_row
        as_json = json.loads((await pf("ps", "--format", "json", "-f", file)).out)
        assert [r["status"] for r in as_json] == ["ready", "ready"]
        assert as_json[0]["bytes_in"] == 5 and as_json[0]["connections_total"] == 1
        typo = await pf("ps", "-f", file, "ecko")
        assert typo.code == 1 and "no such forward: ecko" in typo.err

        logs = (await pf("logs", "--file", file, "echo")).out.splitlines()
        assert f"echo | Forwarding from 127.0.0.1:{port} -> 5000" in logs
        assert f"echo | Forwarding from [::1]:{port} -> 5000" in logs
        assert f"echo | Handling connection for {port}" in logs
        assert not any(line.startswith("web ") for line in logs)

        down = await pf("down", "-f", file)
        assert (down.code, down.out) == (0, "echo: stopped\nweb: stopped\nproject alpha: down\n")
        await wait_pid_gone(started["pid"])
        assert not started["paths"].socket.exists()

    again = await pf("down", "-f", file)
    assert (again.code, again.err) == (0, "Nothing to stop: project alpha is not running.\n")
    ps = await pf("ps", "-f", file)
    assert (ps.code, ps.out, ps.err) == (0, "", "project alpha is not running\n")
    # The history outlives the daemon: logs reads the event log file.
    history = await pf("logs", "--file", file, "--tail", "1")
    last = list(read_log_file(control.project_paths("alpha").log))[-1]
    assert last["forward"] == "" and "stopping" in last["message"].lower()
    assert (history.code, history.out) == (0, f"{last['message']}\n")


async def test_wait_success_and_timeout(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    good = write_project(tmp_path / "good", "good", TWO)
    async with project(good, sandbox, "--wait") as started:
        rows = started["result"].out.splitlines()[1:]
        assert [row.split()[4] for row in rows] == ["ready", "ready"]

    ghost = write_project(
        tmp_path / "ghost",
        "ghost",
        {"ghost": {"target": "pod/ghost", "ports": [":7000"]}, **TWO},
    )
    async with project(ghost, sandbox, "--wait", "--wait-timeout", "3", expect=1) as started:
        assert started["result"].err == (
            'error: ghost is not ready: waiting for pod (last error: pods "ghost" not found)\n'
        )


async def test_up_d_again_reconciles(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    three = {**TWO, "echo2": {"target": "pod/echo", "ports": [":5000"]}}
    file = write_project(tmp_path / "rec", "rec", three)
    async with project(file, sandbox) as started:
        before = {r["name"]: r for r in await _ready(started["paths"])}
        changed = {
            "echo": three["echo"],  # unchanged: must not be touched
            "echo2": {"target": "pod/echo", "ports": [":5000"], "quiet_connections": True},
            "svc": {"target": "service/echo", "ports": [":80"]},  # added; web removed
        }
        write_project(tmp_path / "rec", "rec", changed)
        again = await pf("up", "-d", "-f", file, "--kubeconfig", sandbox.kubeconfig_path)
        assert again.code == 0, again.err
        assert again.err == "svc: started\necho2: recreated\nweb: stopped\n"
        assert control.locked_pid(started["paths"].lock) == started["pid"]  # same daemon
        after = {r["name"]: r for r in await _ready(started["paths"])}
        assert list(after) == ["echo", "echo2", "svc"]
        assert after["echo"]["started"] == before["echo"]["started"]
        assert after["echo"]["listening"] == before["echo"]["listening"]
        assert after["echo2"]["started"] > before["echo2"]["started"]
        assert await echo_through(_port(list(after.values()), "svc")) == b"hello"


async def test_two_projects_side_by_side(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    a = write_project(tmp_path / "a", "proj-a", TWO)
    b = write_project(tmp_path / "b", "proj-b", {"only": TWO["echo"]})
    async with project(a, sandbox) as pa, project(b, sandbox) as pb:
        assert pa["pid"] != pb["pid"]
        for paths in (pa["paths"], pb["paths"]):
            assert control.socket_is_private(paths.socket)  # 0600 socket, 0700 directory
        listing = await pf("ls")
        rows = [re.split(r"\s{3,}", line) for line in listing.out.splitlines()]
        assert rows == [
            ["NAME", "STATUS", "PID", "CONFIG FILES"],
            ["proj-a", "running(2)", str(pa["pid"]), str(a.resolve())],
            ["proj-b", "running(1)", str(pb["pid"]), str(b.resolve())],
        ]
        await pf("down", "-f", a)
        await wait_pid_gone(pa["pid"])
        assert (await pf("ls", "-q")).out == "proj-b\n"
        records = await _ready(pb["paths"])
        assert await echo_through(_port(records, "only")) == b"hello"


async def test_stale_socket_after_kill(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "stale", "stale", {"echo": TWO["echo"]})
    async with project(file, sandbox) as started:
        os.kill(started["pid"], signal.SIGKILL)
        await wait_pid_gone(started["pid"])
        assert started["paths"].socket.exists()  # left behind by the killed daemon
        ps = await pf("ps", "-f", file)
        assert (ps.code, ps.err) == (0, "project stale is not running\n")
        assert not started["paths"].socket.exists()  # detected and cleaned up
    # The lock died with the process: a new daemon starts where the old one was.
    async with project(file, sandbox) as restarted:
        assert restarted["pid"] != started["pid"]
        await _ready(restarted["paths"])


async def test_ps_shows_reconnecting_then_ready_on_new_pod(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    file = write_project(tmp_path / "rc", "rc", {"web": TWO["web"]})
    async with project(file, sandbox) as started:
        paths = started["paths"]
        old_pod = (await _ready(paths))[0]["pod"]
        conn = await control.connect(paths)
        try:
            events = await conn.request("logs", names=["web"], follow=True, tail=0)
            new_pod = await sandbox.replace_pod(old_pod, grace=0)
            async for message in events:
                if message.get("event", {}).get("state") == "reconnecting":
                    break
            # The backoff is 2 s (write_project): the daemon is reconnecting right now.
            now = await control.call(paths, "ps")
            assert now["forwards"][0]["status"] == "reconnecting 1"
        finally:
            await conn.aclose()
        records = await _ready(paths)
        assert (records[0]["pod"], records[0]["reconnects"]) == (new_pod, 1)
        ps = await pf("ps", "-f", file)
        row = ps.out.splitlines()[1].split()
        assert (row[2], row[4]) == (f"default/{new_pod}", "ready")


async def test_ports_env_flag_and_key(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "pe", "pe", TWO, ports_env="ports.env")
    async with project(file, sandbox) as started:
        records = await _ready(started["paths"])
        env_file = tmp_path / "pe" / "ports.env"
        assert env_file.read_text() == (
            "# pfcompose: actual local ports of project pe; rewritten on change\n"
            f"PFCOMPOSE_ECHO_5000={_port(records, 'echo')}\n"
            f"PFCOMPOSE_WEB_8080={_port(records, 'web')}\n"
        )
        restarted = await pf("restart", "-f", file, "web")
        assert (restarted.code, restarted.out) == (0, "web: restarted\n")
        records = await _ready(started["paths"])
        assert f"PFCOMPOSE_WEB_8080={_port(records, 'web')}\n" in env_file.read_text()
    assert not env_file.exists()  # ports of a stopped project are not left lying


async def test_errors_are_one_line(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "err", "err", {"echo": TWO["echo"]})
    async with project(file, sandbox):
        bad = await pf("restart", "-f", file, "nope")
        assert (bad.code, bad.err) == (1, "error: no such forward: nope\n")
        sandboxed = await pf("up", "-d", "--sandbox", "-f", file)
        assert sandboxed.code == 2 and sandboxed.err.count("\n") == 1


async def test_foreground_json_log_file_and_ports_env(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    file = write_project(tmp_path / "fg", "fg", {"echo": TWO["echo"]})
    log_file, ports_env = tmp_path / "fg" / "events.jsonl", tmp_path / "fg" / "p.env"
    command = [
        sys.executable, "-m", "pfcompose", "up", "--json", "-f", str(file),
        "--kubeconfig", str(sandbox.kubeconfig_path),
        "--log-file", str(log_file), "--ports-env", str(ports_env),
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                command, stdout=subprocess.PIPE, check=False, task_status=task_status
            )
        )
        assert process.stdout is not None
        lines: list[dict[str, Any]] = []
        buffer = b""
        with trio.fail_after(20):
            while not any(line.get("state") == "ready" for line in lines):
                chunk = await process.stdout.receive_some(65536)
                assert chunk, "up exited early"
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                lines += [json.loads(raw) for raw in done]
        local = next(line["local"] for line in lines if line["kind"] == "listening")
        assert ports_env.read_text().splitlines()[1:] == [f"PFCOMPOSE_ECHO_5000={local}"]
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await process.wait() == 0
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert logged[: len(lines)] == lines  # the file holds exactly what was printed, and more
    assert not ports_env.exists()
