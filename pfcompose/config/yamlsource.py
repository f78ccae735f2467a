"""Safe YAML loading that remembers where every node was written.

PyYAML's default resolver follows YAML 1.1, which reads the compose trap ``8080:80``
as the sexagesimal integer 484880, ``on`` as a boolean and dates as timestamps; it
also keeps the last of two duplicate keys without a word. This loader resolves
plain scalars with the YAML 1.2 core schema (what Go's yaml.v3, and so compose,
does), rejects duplicate keys, keeps anchors, aliases and ``<<`` merge keys, and
returns a small tree of nodes that carry their ``FILE:LINE:COL`` through merging and
interpolation so every later problem can point at the exact place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import nodes as ynodes

from pfcompose.config.problems import Pos, Problem, format_path

__all__ = ["Map", "Node", "Scalar", "Seq", "find", "load_yaml", "to_plain"]

ScalarValue = str | int | float | bool | None

_TAG = "tag:yaml.org,2002:"
_MAX_NODES = 100_000
_SCALAR_TAGS = frozenset(_TAG + name for name in ("str", "null", "bool", "int", "float"))


@dataclass(eq=False)
class Scalar:
    value: ScalarValue
    pos: Pos


@dataclass(eq=False)
class Seq:
    items: list[Node]
    pos: Pos


@dataclass(eq=False)
class Map:
    entries: dict[str, Node]
    pos: Pos
    keys: dict[str, Pos] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, Node]]:
        return iter(self.entries.items())


Node = Scalar | Seq | Map


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema resolution of plain scalars."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML API


_Loader.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    _TAG + "int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _TAG + "float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(_TAG + "merge", re.compile(r"^(?:<<)$"), ["<"])


class _Fail(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _pos(file: str, mark: Any) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


def _position_of(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load_yaml(text: str, file: str) -> tuple[Node | None, list[Problem]]:
    """Parse one YAML document; returns (tree or None when empty, problems)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        loader.name = file
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.context}: {exc.problem}"
        pos = _pos(file, mark) if mark is not None else None
        return None, [Problem.at(pos, "", message)]
    except yaml.reader.ReaderError as exc:
        line, col = _position_of(text, exc.position)
        message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        return None, [Problem(file, line, col, "", message)]
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
        return None, [Problem(file, None, None, "", str(exc))]
    except RecursionError:
        return None, [Problem(file, None, None, "", "document is nested too deeply")]
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        return None, []
    builder = _Builder(file)
    try:
        tree = builder.build(root, ())
    except _Fail as fail:
        return None, [fail.problem]
    except RecursionError:
        return None, [Problem(file, None, None, "", "document is nested too deeply")]
    return tree, builder.problems


class _Builder:
    """Turns PyYAML's composed node graph into position-carrying nodes."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._count = 0
        self._active: set[int] = set()

    def build(self, node: ynodes.Node, path: tuple[str | int, ...]) -> Node:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _Fail(
                Problem.at(
                    _pos(self.file, node.start_mark),
                    format_path(path),
                    "document is too large (alias expansion)",
                )
            )
        if id(node) in self._active:
            raise _Fail(
                Problem.at(
                    _pos(self.file, node.start_mark),
                    format_path(path),
                    "an alias refers to a node that contains it",
                )
            )
        self._active.add(id(node))
        try:
            if isinstance(node, ynodes.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, ynodes.SequenceNode):
                return self._sequence(node, path)
            assert isinstance(node, ynodes.ScalarNode)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _check_tag(self, node: ynodes.Node, expected: str, path: tuple[str | int, ...]) -> None:
        if node.tag != _TAG + expected:
            raise _Fail(
                Problem.at(
                    _pos(self.file, node.start_mark),
                    format_path(path),
                    f"unsupported tag {_short_tag(node.tag)}",
                )
            )

    def _sequence(self, node: ynodes.SequenceNode, path: tuple[str | int, ...]) -> Seq:
        self._check_tag(node, "seq", path)
        items = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return Seq(items, _pos(self.file, node.start_mark))

    def _mapping(self, node: ynodes.MappingNode, path: tuple[str | int, ...]) -> Map:
        self._check_tag(node, "map", path)
        own: dict[str, tuple[Pos, ynodes.Node]] = {}
        merges: list[ynodes.Node] = []
        for key_node, value_node in node.value:
            key_pos = _pos(self.file, key_node.start_mark)
            if isinstance(key_node, ynodes.ScalarNode) and key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, ynodes.ScalarNode):
                raise _Fail(Problem.at(key_pos, format_path(path), "a key must be a scalar"))
            key = key_node.value
            if key in own:
                first = own[key][0]
                self.problems.append(
                    Problem.at(
                        key_pos,
                        format_path((*path, key)),
                        f'duplicate key "{key}" (first defined at line {first.line})',
                    )
                )
                continue
            own[key] = (key_pos, value_node)
        result = Map({}, _pos(self.file, node.start_mark))
        for source in merges:
            for merged in self._merge_sources(source, path):
                for key, value in merged.entries.items():
                    if key not in result.entries:
                        result.entries[key] = value
                        result.keys[key] = merged.keys[key]
        for key, (key_pos, value_node) in own.items():
            result.entries[key] = self.build(value_node, (*path, key))
            result.keys[key] = key_pos
        return result

    def _merge_sources(self, node: ynodes.Node, path: tuple[str | int, ...]) -> list[Map]:
        if isinstance(node, ynodes.MappingNode):
            built = self.build(node, path)
            assert isinstance(built, Map)
            return [built]
        if isinstance(node, ynodes.SequenceNode) and all(
            isinstance(item, ynodes.MappingNode) for item in node.value
        ):
            out: list[Map] = []
            for item in node.value:
                built = self.build(item, path)
                assert isinstance(built, Map)
                out.append(built)
            return out
        raise _Fail(
            Problem.at(
                _pos(self.file, node.start_mark),
                format_path(path),
                "a << merge key needs a mapping or a list of mappings",
            )
        )

    def _scalar(self, node: ynodes.ScalarNode, path: tuple[str | int, ...]) -> Scalar:
        pos = _pos(self.file, node.start_mark)
        tag = node.tag
        text: str = node.value
        if tag not in _SCALAR_TAGS:
            raise _Fail(Problem.at(pos, format_path(path), f"unsupported tag {_short_tag(tag)}"))
        try:
            value = _construct(tag, text)
        except ValueError:
            raise _Fail(
                Problem.at(pos, format_path(path), f"cannot read {text!r} as {_short_tag(tag)}")
            ) from None
        return Scalar(value, pos)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _construct(tag: str, text: str) -> ScalarValue:
    if tag == _TAG + "str":
        return text
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValueError(text)
        return lowered == "true"
    if tag == _TAG + "int":
        sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
        if digits[:2] == "0o":
            return sign * int(digits[2:], 8)
        if digits[:2] == "0x":
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)
    if tag == _TAG + "float":
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered == ".nan":
            return math.nan
        return float(text)
    raise ValueError(tag)


def find(node: Node | None, *loc: str | int) -> Node | None:
    """The node at ``loc`` below ``node`` (keys and list indexes), or None."""
    for part in loc:
        if isinstance(node, Map) and isinstance(part, str):
            node = node.entries.get(part)
        elif isinstance(node, Seq) and isinstance(part, int) and 0 <= part < len(node.items):
            node = node.items[part]
        else:
            return None
    return node


def to_plain(node: Node | None) -> Any:
    """The bare Python value of a tree (dicts, lists, scalars), for validation."""
    if node is None:
        return None
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Seq):
        return [to_plain(item) for item in node.items]
    return {key: to_plain(value) for key, value in node.entries.items()}
