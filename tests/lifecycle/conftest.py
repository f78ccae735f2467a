"""Lifecycle tests: a sandbox in the test's loop, the CLI as real processes, no leftovers.

Every test gets a private runtime directory (``XDG_RUNTIME_DIR``); at teardown any
daemon still holding a lock there is killed and the test fails — no test may leave
a daemon behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pfcompose.daemon import control
from pfcompose.sandbox.pytest_plugin import sandbox, sandbox_state

__all__ = ["sandbox", "sandbox_state"]

STATE: dict[str, Any] = {
    "pods": [
        {
            "name": "echo",
            "labels": {"app": "echo"},
            "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"}],
        },
    ],
    "services": [
        {
            "name": "echo",
            "selector": {"app": "echo"},
            "ports": [{"name": "echo", "port": 80, "targetPort": "echo"}],
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


@pytest.fixture
def sandbox_state() -> dict[str, Any]:  # noqa: F811 - overrides pfcompose.sandbox.pytest_plugin's
    return STATE


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime directory for sockets; fails the test if a daemon is left."""
    base = tmp_path / "run"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base / "pfcompose"
    leftovers = []
    directory = base / "pfcompose"
    for lock in directory.glob("*.lock") if directory.exists() else []:
        pid = control.locked_pid(lock)
        if pid is not None:
            leftovers.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"daemon processes left behind: {leftovers}"
