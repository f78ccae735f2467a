"""``--ports-env FILE``: the actual local ports as a dotenv file other tools can source.

Random ports (``":5432"``) are only useful if something tells the rest of the
toolchain which port was chosen. The file is derived from events alone — a
``listening`` event adds a port, a forward's ``stopped`` event removes its ports,
the project's ``stopping`` removes the file (its listeners are closing) — so the
foreground ``up`` and the daemon feed it the same way, and the file is gone before
``down`` returns. Each change rewrites the whole file atomically (temp file +
rename): a reader sees the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pfcompose.up.events import Event, Kind

__all__ = ["PortsEnvFile", "env_key", "render"]

_NON_ALNUM = re.compile(r"[^A-Z0-9]")


def env_key(forward: str, remote: int | str) -> str:
    """``PFCOMPOSE_<FORWARD>_<REMOTE>``, upper-cased, every non-alphanumeric as ``_``."""
    return _NON_ALNUM.sub("_", f"PFCOMPOSE_{forward}_{remote}".upper())


def render(project: str, ports: dict[str, dict[str, int]]) -> str:
    """The file's text: a header, then ``KEY=port`` per forward (sorted) and remote port."""
    lines = [f"# pfcompose: actual local ports of project {project}; rewritten on change"]
    for _, keys in sorted(ports.items()):
        lines.extend(f"{key}={local}" for key, local in keys.items())
    return "\n".join(lines) + "\n"


class PortsEnvFile:
    """An event sink keeping ``path`` in step with the ports actually listening."""

    def __init__(self, path: Path, project: str) -> None:
        self.path = path
        self.project = project
        self._ports: dict[str, dict[str, int]] = {}  # forward -> key -> local, in order
        self._written: str | None = None
        self._ended = False

    def __call__(self, event: Event) -> None:
        if self._ended:
            return
        if event.kind is Kind.LISTENING:
            remote, local = event.data.get("remote"), event.data.get("local")
            if isinstance(local, int) and isinstance(remote, int | str):
                keys = self._ports.setdefault(event.forward, {})
                keys.setdefault(env_key(event.forward, remote), local)  # first mapping wins
                self.write()
        elif self._is_stop(event) and self._ports.pop(event.forward, None) is not None:
            self.write()
        elif self._is_project_stopping(event):
            self._ended = True  # the project stops: nothing it listens on stays true
            self.remove()

    @staticmethod
    def _is_project_stopping(event: Event) -> bool:
        return (
            event.kind is Kind.STATE and not event.forward and event.data.get("state") == "stopping"
        )

    @staticmethod
    def _is_stop(event: Event) -> bool:
        return event.kind is Kind.STATE and event.data.get("state") == "stopped"

    def seed(self, listening: Iterable[tuple[str, int | str, int]]) -> None:
        """Start from ports already listening: ``(forward, remote, local)`` triples."""
        for forward, remote, local in listening:
            self._ports.setdefault(forward, {}).setdefault(env_key(forward, remote), local)
        self.write()

    def write(self) -> None:
        """Rewrite the file if its content changed (atomically)."""
        text = render(self.project, self._ports)
        if text == self._written:
            return
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        self._written = text

    def remove(self) -> None:
        """Delete the file: after a stop its ports are no longer true."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._written = None
