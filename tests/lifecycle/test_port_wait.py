"""``pfcompose port`` and ``pfcompose wait`` with and without a running daemon."""

from __future__ import annotations

import json
from pathlib import Path

from lchelp import pf, write_project
from test_lifecycle_e2e import TWO, project

from pfcompose.sandbox.server import Sandbox

CHECK = {"type": "http", "path": "/healthz", "interval": "100ms", "retries": 1}


async def test_without_a_daemon(runtime: Path, tmp_path: Path) -> None:
    file = write_project(tmp_path / "idle", "idle", TWO)
    port = await pf("port", "-f", file, "echo", "5000")
    assert (port.code, port.out, port.err) == (1, "", "error: project idle is not running\n")
    wait = await pf("wait", "-f", file, "--timeout", "1")
    assert (wait.code, wait.out, wait.err) == (1, "", "error: project idle is not running\n")


async def test_port_and_wait_with_a_daemon(sandbox: Sandbox, runtime: Path,
                                           tmp_path: Path) -> None:  # fmt: skip
    forwards = {"echo": TWO["echo"], "web": {**TWO["web"], "healthcheck": CHECK}}
    file = write_project(tmp_path / "pw", "pw", forwards)
    async with project(file, sandbox):
        wait = await pf("wait", "-f", file, "--timeout", "20")
        assert (wait.code, wait.out) == (0, "echo: ready\nweb: healthy\n"), wait.err
        records = json.loads((await pf("ps", "-f", file, "--format", "json")).out)
        echo = next(r for r in records if r["name"] == "echo")
        web = next(r for r in records if r["name"] == "web")
        assert (echo["health"], web["health"]) == (None, "healthy")
        assert web["checks_total"] >= 1 and web["connections_total"] >= web["checks_total"]

        port = await pf("port", "-f", file, "echo", "5000")
        assert (port.code, port.out) == (0, f"127.0.0.1:{echo['listening'][0]['local']}\n")
        nomap = await pf("port", "-f", file, "echo", "6000")
        assert (nomap.code, nomap.out, nomap.err) == (
            1, "", "error: echo has no mapping for remote port 6000\n"
        )  # fmt: skip
        nosuch = await pf("port", "-f", file, "nosuch", "5000")
        assert (nosuch.code, nosuch.err) == (1, "error: no such forward: nosuch\n")

        pod = next(p.name for p in sandbox.state.pods.values() if p.labels.get("app") == "web")
        sandbox.set_app_fault(pod, 8080, "error")
        sick = await pf("wait", "web", "-f", file, "--timeout", "20")
        assert (sick.code, sick.out) == (1, "")
        assert sick.err == "error: web is unhealthy: HTTP 500 from /healthz (expected 200-399)\n"
        ps = await pf("ps", "-f", file)
        web_row = next(line for line in ps.out.splitlines() if line.startswith("web "))
        assert "unhealthy: HTTP 500 from /healthz" in web_row
        # up --wait says why, too.
        again = await pf("up", "--wait", "--wait-timeout", "20", "-f", file,
                         "--kubeconfig", sandbox.kubeconfig_path)  # fmt: skip
        assert again.code == 1
        assert "error: web is unhealthy: HTTP 500 from /healthz (expected 200-399)" in again.err
        sandbox.set_app_fault(pod, 8080, None)
        healed = await pf("wait", "web", "-f", file, "--timeout", "20")
        assert (healed.code, healed.out) == (0, "web: healthy\n"), healed.err
        # The event log has each change once.
        logs = (await pf("logs", "--file", file, "web")).out.splitlines()
        health = [line for line in logs if "health:" in line]
        assert health == [
            "web  | health: starting",
            "web  | health: healthy",
            "web  | health: unhealthy (HTTP 500 from /healthz (expected 200-399))",
            "web  | health: healthy",
        ], health
