"""Helpers for config tests: write files in a temporary project and load them from there."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

Write = Callable[[str, str], Path]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory that is also the working directory."""
    directory = tmp_path / "shop"
    directory.mkdir()
    monkeypatch.chdir(directory)
    for name in ("PFCOMPOSE_PROFILES",):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def write(project: Path) -> Write:
    def write(name: str, text: str) -> Path:
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return Path(name)

    return write
