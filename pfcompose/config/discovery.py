"""Where the files come from: discovery, override files, project name and ``.env``.

Compose conventions, so nothing here surprises someone who knows compose: the first
of ``pfcompose.yaml``, ``pfcompose.yml``, ``forwards.yaml``, ``forwards.yml`` in the
directory or its nearest parent, plus ``<name>.override.yaml``/``.yml`` beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "CANDIDATES",
    "EnvFileError",
    "discover",
    "display_name",
    "normalize_project_name",
    "parse_env",
    "read_env_file",
]

CANDIDATES = ("pfcompose.yaml", "pfcompose.yml", "forwards.yaml", "forwards.yml")


def discover(start: Path) -> list[Path]:
    """The main file found from ``start`` upwards and its override file, if any."""
    directory = start.resolve()
    for folder in (directory, *directory.parents):
        for name in CANDIDATES:
            candidate = folder / name
            if candidate.is_file():
                stem = candidate.name.rsplit(".", 1)[0]
                found = [candidate]
                for suffix in (".override.yaml", ".override.yml"):
                    override = folder / (stem + suffix)
                    if override.is_file():
                        found.append(override)
                        break
                return found
    return []


def display_name(path: Path, cwd: Path) -> str:
    """A discovered file as the user would name it: relative to the working directory."""
    try:
        return os.path.relpath(path, cwd)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def normalize_project_name(name: str) -> str:
    """Compose's rule: lowercase, keep [a-z0-9_-], must start with a letter or digit."""
    kept = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return kept.lstrip("_-")


class EnvFileError(ValueError):
    """An ``.env`` line that cannot be read; carries its 1-based line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=(.*))?$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as compose reads them: comments, ``export``, both quote styles."""
    result: dict[str, str] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = _LINE.match(raw)
        if match is None:
            raise EnvFileError(number, f"invalid line {raw.strip()!r}: expected KEY=VALUE")
        key, value = match.group(1), match.group(2)
        if value is None:
            continue  # a bare KEY takes its value from the environment; nothing to set here
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            body = value[1:]
            start_line = number
            while not _closed(body, quote):
                if number >= len(lines):
                    raise EnvFileError(start_line, f"unterminated quoted value for {key}")
                body += "\n" + lines[number]
                number += 1
            value = _unquote(body, quote)
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        result[key] = value
    return result


def _closed(body: str, quote: str) -> bool:
    if quote == "'":
        return "'" in body
    return '"' in body.replace("\\\\", "").replace('\\"', "")


def _unquote(body: str, quote: str) -> str:
    if quote == "'":
        return body[: body.index("'")]
    out: list[str] = []
    index = 0
    while index < len(body):
        ch = body[index]
        if ch == "\\" and index + 1 < len(body):
            out.append(_ESCAPES.get(body[index + 1], "\\" + body[index + 1]))
            index += 2
            continue
        if ch == '"':
            break
        out.append(ch)
        index += 1
    return "".join(out)


def read_env_file(path: Path) -> dict[str, str]:
    return parse_env(path.read_text(encoding="utf-8-sig"))
