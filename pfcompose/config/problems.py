"""Problems found in a configuration, each one line that points at where it was written.

Every layer of the loader reports into the same shape so the CLI prints them all at
once, in the ``FILE:LINE:COL: path: message`` form editors and terminals link to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigErrors", "Pos", "Problem"]


@dataclass(frozen=True)
class Pos:
    """Where a node was written: the file as the user named it, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One error or warning; ``str()`` is the line the user sees."""

    file: str | None
    line: int | None
    column: int | None
    path: str
    message: str

    @classmethod
    def at(cls, pos: Pos | None, path: str, message: str) -> Problem:
        if pos is None:
            return cls(None, None, None, path, message)
        return cls(pos.file, pos.line, pos.column, path, message)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}:{self.column if self.column is not None else 1}"
            parts.append(where)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigErrors(Exception):
    """The configuration is wrong; ``problems`` holds every error found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def unique(problems: Iterable[Problem]) -> list[Problem]:
    """Drop repeats (a default inherited by many forwards is reported once), keep order."""
    seen: set[Problem] = set()
    out: list[Problem] = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            out.append(problem)
    return out


def format_path(parts: Iterable[str | int]) -> str:
    """``("forwards", "db", "ports", 1)`` → ``forwards.db.ports[1]``, the way users think of it."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
