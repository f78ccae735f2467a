"""``pfcompose run [FORWARD...] -- CMD`` against the sandbox, as a real process.

CMD is ``sh -c``: its exit status comes back as run's, its stdout stays clean,
signals sent to pfcompose reach it, the forwards run started are gone afterwards,
and a daemon's forwards are used (same port) and left running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio
from lchelp import echo_through, pf, write_project
from test_lifecycle_e2e import TWO, project

from pfcompose.sandbox.server import Sandbox

ECHO = {"echo": TWO["echo"]}

# Sends "ping" through $PFCOMPOSE_ECHO_5000 and prints what came back.
PING = (
    f"{sys.executable} -c \"import os, socket; s = socket.create_connection(("
    "os.environ['PFCOMPOSE_ECHO_HOST'], int(os.environ['PFCOMPOSE_ECHO_5000']))); "
    "s.sendall(b'ping'); s.shutdown(1); print(s.recv(100).decode())\""
)


async def _refused(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_run_passes_ports_and_exit_status(sandbox: Sandbox, runtime: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    file = write_project(tmp_path / "r", "r", TWO)
    kc = sandbox.kubeconfig_path
    script = f'printf "%s %s\\n" "$PFCOMPOSE_ECHO_5000" "$PFCOMPOSE_WEB_8080"; {PING}; exit 7'
    result = await pf("run", "-f", file, "--kubeconfig", kc, "--", "sh", "-c", script)
    assert result.code == 7, result.err
    ports, reply = result.out.splitlines()
    echo_port, web_port = (int(p) for p in ports.split())
    assert reply == "ping"
    assert result.err == ""  # quiet: nothing failed, nothing reconnected
    # The forwards run started are stopped: nothing listens any more.
    assert await _refused(echo_port) and await _refused(web_port)

    # Only the FORWARDs named; the others' variables are absent.
    only = await pf("run", "echo", "-f", file, "--kubeconfig", kc, "--",
                    "sh", "-c", 'test -z "$PFCOMPOSE_WEB_8080" && echo "$PFCOMPOSE_ECHO_HOST"')
    assert (only.code, only.out) == (0, "127.0.0.1\n"), only.err


async def test_run_statuses_of_its_own(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "s", "s", ECHO)
    kc = sandbox.kubeconfig_path
    missing = await pf("run", "-f", file, "--kubeconfig", kc, "--", "no-such-command-xyz")
    assert (missing.code, missing.err) == (127, "error: no-such-command-xyz: command not found\n")
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    denied = await pf("run", "-f", file, "--kubeconfig", kc, "--", script)
    assert (denied.code, denied.err) == (126, f"error: {script}: permission denied\n")
    usage = await pf("run", "-f", file, "--kubeconfig", kc, "true")
    assert usage.code == 2 and usage.err.startswith("error: no command: "), usage.err
    nosuch = await pf("run", "nosuch", "-f", file, "--kubeconfig", kc, "--", "true")
    assert (nosuch.code, nosuch.err) == (2, "no such forward: nosuch\n")

    ghosts = {"ghost": {"target": "pod/ghost", "ports": [":7000"]}}
    ghost = write_project(tmp_path / "g", "g", ghosts)
    never = await pf("run", "-f", ghost, "--kubeconfig", kc, "--wait-timeout", "1", "--",
                     "sh", "-c", "echo ran")
    assert never.code == 125 and never.out == ""
    assert never.err.endswith(
        'error: ghost is not ready: waiting for pod (last error: pods "ghost" not found)\n'
    ), never.err


async def test_run_waits_for_healthy_and_gives_up_on_unhealthy(
    sandbox: Sandbox, runtime: Path, tmp_path: Path
) -> None:
    check = {"type": "http", "path": "/healthz", "interval": "100ms", "retries": 1}
    file = write_project(tmp_path / "h", "h", {"web": {**TWO["web"], "healthcheck": check}})
    kc = sandbox.kubeconfig_path
    ok = await pf("run", "-f", file, "--kubeconfig", kc, "--", "sh", "-c", "echo ran")
    assert (ok.code, ok.out) == (0, "ran\n"), ok.err
    pod = next(p.name for p in sandbox.state.pods.values() if p.labels.get("app") == "web")
    sandbox.set_app_fault(pod, 8080, "error")
    try:
        sick = await pf("run", "-f", file, "--kubeconfig", kc, "--", "sh", "-c", "echo ran")
    finally:
        sandbox.set_app_fault(pod, 8080, None)
    assert sick.code == 125 and sick.out == ""
    assert "error: web is unhealthy: HTTP 500 from /healthz (expected 200-399)\n" in sick.err


async def test_run_delivers_signals_to_cmd(sandbox: Sandbox, runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "sig", "sig", ECHO)
    script = 'trap "echo got TERM; exit 42" TERM; echo started; while :; do sleep 0.05; done'
    argv = [sys.executable, "-m", "pfcompose", "run", "-v", "-f", str(file), "--kubeconfig",
            str(sandbox.kubeconfig_path), "--", "sh", "-c", script]  # fmt: skip
    log = (tmp_path / "stderr").open("wb")
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log)
    try:
        assert process.stdout is not None
        out = b""
        with trio.fail_after(20):
            while b"started\n" not in out:
                chunk = await process.stdout.receive_some(1024)
                assert chunk, out
                out += chunk
            process.send_signal(signal.SIGTERM)
            while chunk := await process.stdout.receive_some(1024):
                out += chunk
            assert await process.wait() == 42
        assert out == b"started\ngot TERM\n"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        print((tmp_path / "stderr").read_text())  # shown if the test fails


async def test_run_reuses_the_daemons_forwards(sandbox: Sandbox, runtime: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    file = write_project(tmp_path / "d", "d", TWO)
    async with project(file, sandbox, "--wait"):
        address = (await pf("port", "-f", file, "echo", "5000")).out.strip()
        port = int(address.rsplit(":", 1)[1])
        result = await pf("run", "echo", "-f", file, "--", "sh", "-c",
                          f'echo "$PFCOMPOSE_ECHO_5000"; {PING}')
        assert (result.code, result.out) == (0, f"{port}\nping\n"), result.err
        # Left running: the daemon's forward still carries connections.
        assert await echo_through(port) == b"hello"
        ps = await pf("ps", "-f", file, "--format", "json")
        assert '"connections_total": 2' in ps.out  # run's ping and ours, one listener
