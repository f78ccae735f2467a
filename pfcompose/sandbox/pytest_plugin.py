"""pytest support: a running sandbox for a test, and kubectl driven against it.

Use it from a ``conftest.py``::

    pytest_plugins = ["pfcompose.sandbox.pytest_plugin"]

Fixtures:

* ``sandbox_state`` – the cluster to emulate, as a state dict (docs/sandbox.md);
  override it in your conftest or module. Default: :data:`DEFAULT_STATE`.
* ``sandbox`` – (async, pytest-trio) a :class:`~pfcompose.sandbox.server.Sandbox`
  running in the test's trio loop; faults are plain method calls.
* ``sandbox_process`` – (sync) ``pfcompose sandbox`` in a subprocess, for tests that
  are not trio tests; :class:`SandboxProcess` exposes the URL, the kubeconfig and
  the ``/_sandbox/`` admin API.

Helpers: :func:`kubectl_port_forward` (start ``kubectl port-forward``, wait for its
``Forwarding from`` lines — no sleeps — and always kill it) and :func:`run_kubectl`.
Both use a private ``--cache-dir`` and ``HOME`` so nothing lands in ``~/.kube``.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from pfcompose._util.lines import LineSplitter
from pfcompose.platform import PORTABLE
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State

__all__ = [
    "DEFAULT_STATE",
    "KubectlForward",
    "SandboxProcess",
    "fast_path_only",
    "kubectl_env",
    "kubectl_port_forward",
    "requires_kubectl",
    "run_kubectl",
    "sandbox",
    "sandbox_process",
    "sandbox_state",
    "start_sandbox_process",
]

fast_path_only = pytest.mark.skipif(
    PORTABLE,
    reason="tests a platform fast path itself; PFCOMPOSE_PORTABLE=1 takes the portable "
    "one (tests/platform checks that path)",
)
"""For tests of a Linux fast path itself (exec hand-over, mallopt, rlimit, AF_UNIX)."""

DEFAULT_STATE: dict[str, Any] = {
    "pods": [
        {
            "name": "echo",
            "labels": {"app": "echo"},
            "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"}],
        },
        {
            "name": "blob",
            "labels": {"app": "blob"},
            "ports": [{"containerPort": 9000, "name": "blob", "serve": "blob"}],
        },
    ],
    "services": [
        {
            "name": "echo",
            "selector": {"app": "echo"},
            "ports": [
                {"name": "echo", "port": 80, "targetPort": "echo"},
                {"name": "direct", "port": 5000, "targetPort": 5000},
            ],
        },
    ],
    "deployments": [
        {
            "name": "web",
            "replicas": 1,
            "template": {
                "labels": {"app": "web"},
                "ports": [{"containerPort": 8080, "name": "http", "serve": "http"}],
            },
        },
    ],
}
"""Two pods (``echo`` on 5000, ``blob`` on 9000), a service and a deployment."""

KUBECTL = "kubectl"
STARTUP_TIMEOUT = 20.0
MAX_OUTPUT_LINE = 1 << 20
"""Bound on one line of a child process's output (the sandbox, kubectl) read here."""

requires_kubectl = pytest.mark.skipif(
    shutil.which(KUBECTL) is None, reason="kubectl is not installed (needed for this test)"
)
"""Mark tests that run the real kubectl: they skip, with this reason, where it is absent."""


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def sandbox_state() -> dict[str, Any] | State:
    """Override to choose the emulated cluster (a state dict or a State)."""
    return DEFAULT_STATE


@pytest.fixture
async def sandbox(sandbox_state: dict[str, Any] | State) -> AsyncIterator[Sandbox]:
    """A sandbox in the test's trio loop; stopped when the test ends."""
    state = sandbox_state if isinstance(sandbox_state, State) else State.from_dict(sandbox_state)
    async with run_sandbox(state) as sb:
        yield sb


@pytest.fixture
def sandbox_process(
    sandbox_state: dict[str, Any] | State, tmp_path: Path
) -> Iterator[SandboxProcess]:
    """``pfcompose sandbox`` in a subprocess (needs a state dict, not a State)."""
    if isinstance(sandbox_state, State):
        raise TypeError("sandbox_process needs sandbox_state as a dict (it is written to YAML)")
    with start_sandbox_process(sandbox_state, tmp_path) as proc:
        yield proc


# -- the subprocess sandbox -----------------------------------------------------------


@dataclass
class SandboxProcess:
    """A ``pfcompose sandbox`` child process and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    kubeconfig_path: Path
    output: list[str] = field(default_factory=list)

    def admin(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call the ``/_sandbox/`` API: ``admin("POST", "/_sandbox/pods/default/echo/kill")``."""
        data = json.dumps(body or {}).encode() if method != "GET" else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")


def start_sandbox_process(
    state: Mapping[str, Any] | None,
    directory: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = STARTUP_TIMEOUT,
    command: Sequence[str] = (),
) -> _ProcessContext:
    """Start ``python -m pfcompose sandbox`` (or ``command sandbox``) and wait for its
    ``Ready`` line."""
    return _ProcessContext(state, directory, list(extra_args), timeout, list(command))


class _ProcessContext:
    def __init__(
        self,
        state: Mapping[str, Any] | None,
        directory: Path,
        extra: list[str],
        timeout: float,
        command: list[str] | None = None,
    ) -> None:
        self._state, self._dir, self._extra, self._timeout = state, directory, extra, timeout
        self._command = command or [sys.executable, "-m", "pfcompose"]
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        self._dir.mkdir(parents=True, exist_ok=True)
        args = [
            *self._command,
            "sandbox",
            "--kubeconfig-out",
            str(self._dir / "kubeconfig"),
            *self._extra,
        ]
        if self._state is not None:
            state_file = self._dir / "state.yaml"
            state_file.write_text(yaml.safe_dump(dict(self._state)))
            args += ["--state", str(state_file)]
        self._proc = proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        lines: list[str] = []
        url = kubeconfig = None
        deadline = time.monotonic() + self._timeout
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        splitter = LineSplitter(MAX_OUTPUT_LINE)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise RuntimeError("pfcompose sandbox did not start: " + " | ".join(lines))
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("pfcompose sandbox exited: " + " | ".join(lines))
                for raw in splitter.feed(chunk):
                    line = raw.decode()
                    lines.append(line)
                    if m := re.match(r"Sandbox API server listening on (\S+)", line):
                        url = m.group(1)
                    if m := re.match(r"kubeconfig written to (\S+)", line):
                        kubeconfig = Path(m.group(1))
                    if line.startswith("Ready") and url and kubeconfig:
                        return SandboxProcess(proc, url, kubeconfig, lines)
        except BaseException:
            self._stop()
            raise
        finally:
            sel.close()

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self._stop()


# -- kubectl ------------------------------------------------------------------------------


def kubectl_env(
    home: Path, *, websockets: bool | None = True, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for kubectl: private HOME, no KUBECONFIG leak, transport switch.

    ``websockets=None`` leaves ``KUBECTL_PORT_FORWARD_WEBSOCKETS`` unset: kubectl's default.
    """
    switch = "KUBECTL_PORT_FORWARD_WEBSOCKETS"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", switch)}
    env["HOME"] = str(home)
    if websockets is not None:
        env[switch] = "true" if websockets else "false"
    env.update(extra or {})
    return env


async def run_kubectl(
    kubeconfig: Path,
    *args: str,
    timeout: float = 30.0,
    websockets: bool | None = True,
    kubectl: str | os.PathLike[str] = KUBECTL,
) -> subprocess.CompletedProcess[bytes]:
    """``kubectl --kubeconfig … --cache-dir … ARGS`` with a time limit; never raises on exit≠0.

    ``kubectl`` picks another binary (e.g. from :mod:`pfcompose.sandbox.testing_kubectl`).
    """
    home = Path(tempfile.mkdtemp(prefix="pfcompose-kubectl-"))
    try:
        cmd = [
            os.fspath(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(home / "cache"),
            *args,
        ]
        with trio.fail_after(timeout):
            return await trio.run_process(
                cmd,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=kubectl_env(home, websockets=websockets),
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


class _Lines:
    """Lines of a trio receive stream, read on demand (no background task): a loop
    around the one :class:`~pfcompose._util.lines.LineSplitter`."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._splitter = LineSplitter(MAX_OUTPUT_LINE)
        self._lines: deque[bytes] = deque()
        self.eof = False

    async def readline(self) -> str | None:
        """The next line (the unterminated last one too); None after EOF."""
        while not self._lines:
            if self.eof:
                return None
            data = await self._stream.receive_some(65536)
            if data:
                self._lines.extend(self._splitter.feed(data))
            else:
                self.eof = True
                if rest := self._splitter.finish():
                    return rest.decode()
        return self._lines.popleft().decode()


@dataclass
class KubectlForward:
    """A running ``kubectl port-forward``: its local ports and its output lines."""

    process: trio.Process
    local_ports: list[int]
    lines: list[str]
    _stdout: _Lines
    _stderr: _Lines

    async def next_line(self, timeout: float = 10.0) -> str | None:
        """The next stdout line (None at EOF)."""
        with trio.fail_after(timeout):
            line = await self._stdout.readline()
        if line is not None:
            self.lines.append(line)
        return line

    async def wait_exit(self, timeout: float = 15.0) -> tuple[int, str, str]:
        """Wait for kubectl to exit: (status, rest of stdout, all of stderr)."""
        with trio.fail_after(timeout):
            out: list[str] = []
            while (line := await self._stdout.readline()) is not None:
                out.append(line)
            err: list[str] = []
            while (line := await self._stderr.readline()) is not None:
                err.append(line)
            status = await self.process.wait()
        return status, "\n".join(out), "\n".join(err)


@asynccontextmanager
async def kubectl_port_forward(
    kubeconfig: Path,
    target: str,
    *ports: str,
    websockets: bool | None = True,
    namespace: str | None = None,
    addresses: Sequence[str] = ("localhost",),
    timeout: float = STARTUP_TIMEOUT,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    kubectl: str | os.PathLike[str] = KUBECTL,
) -> AsyncIterator[KubectlForward]:
    """Run ``kubectl port-forward TARGET PORTS…``; yield once every listener is up.

    Readiness = one ``Forwarding from`` line per (port, address) — ``localhost``
    counts twice (127.0.0.1 and ::1). kubectl is killed when the block ends.
    ``kubectl`` picks another binary (e.g. from :mod:`pfcompose.sandbox.testing_kubectl`).
    """
    home = Path(tempfile.mkdtemp(prefix="pfcompose-kubectl-"))
    cmd = [
        os.fspath(kubectl),
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(home / "cache"),
        "port-forward",
        target,
        *ports,
        "--address",
        ",".join(addresses),
        *extra_args,
    ]
    if namespace:
        cmd += ["-n", namespace]
    expected = len(ports) * sum(2 if a == "localhost" else 1 for a in addresses)
    try:
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                _run_process, cmd, kubectl_env(home, websockets=websockets, extra=env)
            )
            try:
                assert proc.stdout is not None and proc.stderr is not None
                fwd = KubectlForward(proc, [], [], _Lines(proc.stdout), _Lines(proc.stderr))
                with trio.fail_after(timeout):
                    seen = 0
                    while seen < expected:
                        line = await fwd._stdout.readline()
                        if line is None:
                            _, _, err = await fwd.wait_exit()
                            raise RuntimeError(f"kubectl port-forward failed: {err.strip()}")
                        fwd.lines.append(line)
                        if m := re.match(r"Forwarding from (?:\[[^\]]*\]|[^:]+):(\d+) -> ", line):
                            seen += 1
                            port = int(m.group(1))
                            if port not in fwd.local_ports:
                                fwd.local_ports.append(port)
                yield fwd
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        proc.kill()
                    await proc.wait()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the test's own exception, unwrapped
            raise group.exceptions[0] from None
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _run_process(
    cmd: list[str], env: dict[str, str], *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    await trio.run_process(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
        task_status=task_status,
    )
