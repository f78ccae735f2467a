"""Sandbox tests use the fixtures of pfcompose.testing, as a user's suite would."""

from __future__ import annotations

from pfcompose.testing import sandbox, sandbox_process, sandbox_state

__all__ = ["sandbox", "sandbox_process", "sandbox_state"]
