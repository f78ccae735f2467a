"""Helpers of the lifecycle tests (a module of its own: ``conftest`` names collide)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml


@dataclass
class Result:
    code: int
    out: str
    err: str


async def pf(*args: str | Path, cwd: Path | None = None, timeout: float = 30.0) -> Result:
    """Run ``python -m pfcompose ARGS`` as a real process (a daemon must outlive it)."""
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [sys.executable, "-m", "pfcompose", *map(str, args)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            stdin=None,
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def write_project(directory: Path, name: str, forwards: dict[str, Any], **top: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "forwards.yaml"
    document = {
        "name": name,
        **top,
        "defaults": {"reconnect": {"initial_backoff": "2s", "max_backoff": "2s"}},
        "forwards": forwards,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for a (non-child) process to exit: a pidfd turns readable, no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def echo_through(port: int, payload: bytes = b"hello") -> bytes:
    """Send ``payload`` through a local port to the echo pod and read it back."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)
            received = b""
            while len(received) < len(payload):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received
