"""The processes a benchmark run starts: the sandbox and the forwarders under test.

Every process writes its output to a file (never a pipe nobody drains), is
waited for with a deadline by polling that file, and is stopped by
:meth:`Proc.stop` — callers use ``with`` blocks so that happens in ``finally``.
Memory and CPU are read from ``/proc/PID/status`` (VmRSS, VmHWM) and
``/proc/PID/stat`` (utime + stime).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

POLL = 0.02
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A process did not become ready in time (the message carries its output)."""


_LIVE: list[Proc] = []
_stopping = False


def stop_all() -> None:
    """Stop every process still running (SIGTERM of the benchmark); no new ones start."""
    global _stopping
    _stopping = True
    for proc in reversed(list(_LIVE)):
        proc.stop()


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mib(pid: int) -> float:
    """Resident set size now (VmRSS), MiB."""
    return _status_kib(pid, "VmRSS") / 1024


def hwm_mib(pid: int) -> float:
    """Peak resident set size so far (VmHWM), MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def wait_until_idle(pid: int, *, busy_below: float = 0.05, window: float = 0.2,
                    timeout: float = 15.0) -> float:
    """Wait until ``pid`` uses less than ``busy_below`` of a core over ``window`` seconds,
    at most ``timeout`` seconds; returns the seconds waited.

    The sandbox goes on tearing down a subject's connections after the subject has
    exited (1000 WebSockets take it a few seconds): measured while it does, the
    next subject's first phase ran at a quarter of its rate.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < busy_below * window:
            break
    return time.monotonic() - start


@dataclass
class Proc:
    """A child process whose output goes to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ports: dict[int, int] = field(default_factory=dict)  # remote port → local port

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_until(self, check: Callable[[str], bool], timeout: float, what: str) -> None:
        """Poll the output until ``check`` accepts it; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self.output()):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(POLL)
        tail = " | ".join(self.output().strip().splitlines()[-5:])
        state = "exited" if self.popen.poll() is not None else f"not {what} after {timeout:.0f} s"
        raise StartError(f"{self.name} {state}: {tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always reaps."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Proc:
    if _stopping:
        raise StartError(f"{name} not started: the benchmark is stopping")
    with open(log, "wb") as out:
        popen = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=dict(env) if env else None)
    proc = Proc(name, popen, log)
    _LIVE.append(proc)
    return proc


# -- the sandbox ------------------------------------------------------------------------

@dataclass
class SandboxInfo:
    url: str
    kubeconfig: Path

    def backend(self, pod: str, port: int) -> int:
        """The loopback port of the pod's own listener (the direct-connection ceiling)."""
        with urllib.request.urlopen(self.url + "/_sandbox/state", timeout=10) as resp:
            state = json.loads(resp.read())
        for p in state["pods"]:
            if p["name"] == pod:
                return int(p["ports"][str(port)]["address"].rsplit(":", 1)[1])
        raise KeyError(pod)


def start_sandbox(state: Mapping[str, Any], workdir: Path, timeout: float = 30.0,
                  extra: Sequence[str] = ()) -> tuple[Proc, SandboxInfo]:
    state_file = workdir / "state.yaml"
    state_file.write_text(yaml.safe_dump(dict(state)))
    kubeconfig = workdir / "kubeconfig"
    proc = spawn("sandbox", [sys.executable, "-m", "pfcompose", "sandbox", "--state",
                             str(state_file), "--kubeconfig-out", str(kubeconfig), *extra],
                 workdir / "sandbox.log")
    try:
        proc.wait_until(lambda out: "\nReady" in out, timeout, "ready")
        m = re.search(r"listening on (\S+)", proc.output())
        assert m is not None
        return proc, SandboxInfo(m.group(1), kubeconfig)
    except BaseException:
        proc.stop()
        raise


# -- forwarders -----------------------------------------------------------------------------

_KUBECTL_LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


def kubectl_path(requested: str) -> str | None:
    return shutil.which(requested)


def start_kubectl(kubectl: str, sandbox: SandboxInfo, target: str, ports: Sequence[int],
                  workdir: Path, *, websockets: bool, name: str, timeout: float = 30.0) -> Proc:
    """``kubectl port-forward TARGET :P…`` on 127.0.0.1; ready at one line per port."""
    home = workdir / f"home-{name}"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(home)
    env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "true" if websockets else "false"
    args = [kubectl, "--kubeconfig", str(sandbox.kubeconfig), "--cache-dir", str(home / "cache"),
            "port-forward", target, *(f":{p}" for p in ports), "--address", "127.0.0.1"]
    proc = spawn(name, args, workdir / f"{name}.log", env)
    try:
        proc.wait_until(lambda out: len(_KUBECTL_LINE.findall(out)) >= len(ports), timeout,
                        "forwarding")
        for local, remote in _KUBECTL_LINE.findall(proc.output()):
            proc.ports[int(remote)] = int(local)
        return proc
    except BaseException:
        proc.stop()
        raise


def forwards_file(forwards: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    defaults = {"addresses": ["127.0.0.1"], "quiet_connections": True,
                "reconnect": {"enabled": True}}
    path.write_text(yaml.safe_dump({"name": "bench", "defaults": defaults,
                                    "forwards": dict(forwards)}))
    return path


def _events(out: str) -> list[dict[str, Any]]:
    events = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def pfcompose_progress(out: str) -> tuple[set[tuple[str, int]], set[str]]:
    """(forward, remote port) pairs listening, and forwards ready, from ``--json`` output."""
    listening: set[tuple[str, int]] = set()
    ready: set[str] = set()
    for ev in _events(out):
        if ev.get("kind") == "listening":
            listening.add((ev["forward"], int(ev["remote"])))
        elif ev.get("kind") == "state" and ev.get("state") == "ready":
            ready.add(ev["forward"])
    return listening, ready


def start_pfcompose(sandbox: SandboxInfo, forwards: Mapping[str, Mapping[str, Any]],
                    workdir: Path, *, name: str, timeout: float = 60.0) -> Proc:
    """``pfcompose up --json`` through the sandbox; ready when every forward is ready."""
    spec = forwards_file(forwards, workdir / f"{name}.yaml")
    args = [sys.executable, "-m", "pfcompose", "up", "-f", str(spec), "--kubeconfig",
            str(sandbox.kubeconfig), "--context", "pfcompose-sandbox", "--json",
            "--quiet-connections"]
    proc = spawn(name, args, workdir / f"{name}.log")
    expected = {(f, int(str(p).rsplit(":", 1)[-1])) for f, spec_ in forwards.items()
                for p in spec_["ports"]}

    def done(out: str) -> bool:
        listening, ready = pfcompose_progress(out)
        return expected <= listening and set(forwards) <= ready

    try:
        proc.wait_until(done, timeout, "ready")
        for ev in _events(proc.output()):
            if ev.get("kind") == "listening":
                proc.ports[int(ev["remote"])] = int(ev["local"])
        return proc
    except BaseException:
        proc.stop()
        raise
