"""Merging ``-f`` files in order, compose style, keeping every node's source position.

Mappings merge key by key (recursively); a later scalar or list replaces the earlier
value wholesale; a later ``null`` therefore unsets a key. Keys keep the order in
which they first appeared, so forwards stay in file order.
"""

from __future__ import annotations

from collections.abc import Iterable

from pfcompose.config.yamlsource import Map, Node

__all__ = ["merge", "merge_all"]


def merge(base: Node, override: Node) -> Node:
    """``override`` laid over ``base``; neither input is modified."""
    if not (isinstance(base, Map) and isinstance(override, Map)):
        return override
    result = Map(dict(base.entries), base.pos, dict(base.keys))
    for key, value in override.entries.items():
        if key in result.entries:
            result.entries[key] = merge(result.entries[key], value)
        else:
            result.entries[key] = value
            result.keys[key] = override.keys[key]
    return result


def merge_all(nodes: Iterable[Node]) -> Node | None:
    merged: Node | None = None
    for node in nodes:
        merged = node if merged is None else merge(merged, node)
    return merged
