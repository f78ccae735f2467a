"""up tests run against an in-process sandbox (pfcompose.sandbox.pytest_plugin's fixtures)."""

from __future__ import annotations

import pytest

from pfcompose.sandbox.pytest_plugin import sandbox, sandbox_state

__all__ = ["sandbox", "sandbox_state", "transport"]

TRANSPORTS = ["auto", "spdy", "spdy-over-websocket", "websocket"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
