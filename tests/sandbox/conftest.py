"""Sandbox tests use the fixtures of pfcompose.sandbox.pytest_plugin, as a user's suite would."""

from __future__ import annotations

from pfcompose.sandbox.pytest_plugin import sandbox, sandbox_process, sandbox_state

__all__ = ["sandbox", "sandbox_process", "sandbox_state"]
