"""``${VAR}`` interpolation with compose's semantics, applied to string values only.

``${VAR}`` / ``$VAR`` (unset: a warning, then empty), ``${VAR:-default}`` (unset or
empty), ``${VAR-default}`` (unset), ``${VAR:?message}`` / ``${VAR?message}`` (an error),
``${VAR:+alt}`` / ``${VAR+alt}``, ``$$`` for a literal ``$``. Defaults may nest.
Keys are never interpolated, and values keep the position of the string they came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pfcompose.config.problems import Problem, format_path
from pfcompose.config.yamlsource import Map, Node, Scalar, Seq

__all__ = ["InterpolationError", "interpolate", "is_extension_key", "substitute"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A required variable is missing or the template is malformed."""


def substitute(text: str, env: Mapping[str, str], warnings: list[str] | None = None) -> str:
    """Expand one string; unset plain variables append compose's warning to ``warnings``."""
    sink: list[str] = [] if warnings is None else warnings
    out: list[str] = []
    index = 0
    while index < len(text):
        dollar = text.find("$", index)
        if dollar < 0:
            out.append(text[index:])
            break
        out.append(text[index:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            index = dollar + 2
        elif following == "{":
            end = _closing_brace(text, dollar + 2)
            if end < 0:
                raise _invalid(text)
            out.append(_braced(text[dollar + 2 : end], text, env, sink))
            index = end + 1
        else:
            match = _NAME.match(text, dollar + 1)
            if match is None:
                raise _invalid(text)
            out.append(_lookup(match.group(), env, sink))
            index = match.end()
    return "".join(out)


def _invalid(text: str) -> InterpolationError:
    return InterpolationError(f'invalid interpolation format in "{text}": write $$ for a literal $')


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    index = start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1


def _lookup(name: str, env: Mapping[str, str], warnings: list[str]) -> str:
    if name in env:
        return env[name]
    warnings.append(f'The "{name}" variable is not set. Defaulting to a blank string.')
    return ""


def _braced(body: str, text: str, env: Mapping[str, str], warnings: list[str]) -> str:
    match = _NAME.match(body)
    if match is None:
        raise _invalid(text)
    name = match.group()
    rest = body[match.end() :]
    if not rest:
        return _lookup(name, env, warnings)
    value = env.get(name)
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(operator):
            argument = rest[len(operator) :]
            break
    else:
        raise _invalid(text)
    colon = operator.startswith(":")
    missing = value is None or (colon and value == "")
    if operator.endswith("-"):
        return substitute(argument, env, warnings) if missing else str(value)
    if operator.endswith("+"):
        return "" if missing else substitute(argument, env, warnings)
    if missing:
        message = substitute(argument, env, warnings)
        detail = f": {message}" if message else ""
        raise InterpolationError(f"required variable {name} is missing a value{detail}")
    return str(value)


def is_extension_key(path: tuple[str | int, ...], key: str) -> bool:
    """``x-`` keys are free-form at the top level, in ``defaults`` and in a forward."""
    if not key.startswith("x-"):
        return False
    return len(path) == 0 or path == ("defaults",) or (len(path) == 2 and path[0] == "forwards")


def interpolate(
    node: Node, env: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[Node, list[Problem], list[Problem]]:
    """A copy of ``node`` with every string value expanded; returns (node, errors, warnings)."""
    errors: list[Problem] = []
    warnings: list[Problem] = []

    def walk(current: Node, where: tuple[str | int, ...]) -> Node:
        if isinstance(current, Scalar):
            if not isinstance(current.value, str) or "$" not in current.value:
                return current
            found: list[str] = []
            try:
                value = substitute(current.value, env, found)
            except InterpolationError as exc:
                errors.append(Problem.at(current.pos, format_path(where), str(exc)))
                return current
            warnings.extend(Problem.at(current.pos, format_path(where), w) for w in found)
            return Scalar(value, current.pos)
        if isinstance(current, Seq):
            return Seq(
                [walk(item, (*where, i)) for i, item in enumerate(current.items)], current.pos
            )
        entries = {
            key: value if is_extension_key(where, key) else walk(value, (*where, key))
            for key, value in current.entries.items()
        }
        return Map(entries, current.pos, dict(current.keys))

    return walk(node, path), errors, warnings
