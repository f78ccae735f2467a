"""Kubernetes label selectors (apimachinery ``labels.Parse`` grammar), parsed and normalised.

The config validates and normalises selectors with it (keys sorted, value sets
sorted, as kubectl prints them); the resolver and the sandbox evaluate them with
``matches``. Supported: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k``, ``!k``, ``k>1``, ``k<1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Requirement",
    "SelectorError",
    "format_selector",
    "matches",
    "parse_selector",
    "selector_from_labels",
]

Op = Literal["=", "!=", "in", "notin", "exists", "!", "gt", "lt"]


class SelectorError(ValueError):
    """The selector does not parse or names an invalid key or value."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        symbol = {"=": "=", "!=": "!=", "gt": ">", "lt": "<"}[self.op]
        return f"{self.key}{symbol}{self.values[0]}"


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY_NAME = re.compile(rf"^{_NAME}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TOKEN = re.compile(r"\s*(!=|==|=|!|<|>|\(|\)|,|[^\s,()=!<>]+)")


def validate_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _KEY_NAME.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: a name is at most 63 characters of "
            "[A-Za-z0-9-_.], starting and ending with a letter or digit"
        )


def validate_value(value: str) -> None:
    if value and (len(value) > 63 or not _KEY_NAME.match(value)):
        raise SelectorError(
            f"invalid label value {value!r}: at most 63 characters of [A-Za-z0-9-_.], "
            "starting and ending with a letter or digit"
        )


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    index = 0
    while index < len(text):
        if text[index:].strip() == "":
            break
        match = _TOKEN.match(text, index)
        if match is None:  # pragma: no cover - the pattern accepts every character
            raise SelectorError(f"cannot parse selector {text!r}")
        tokens.append(match.group(1))
        index = match.end()
    return tokens


_SPECIAL = {"!=", "==", "=", "!", "<", ">", "(", ")", ","}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, expected: str) -> SelectorError:
        found = self.peek()
        where = "the end" if found is None else repr(found)
        return SelectorError(
            f"cannot parse selector {self.text!r}: expected {expected}, found {where}"
        )

    def identifier(self, what: str) -> str:
        token = self.peek()
        if token is None or token in _SPECIAL:
            raise self.fail(what)
        self.index += 1
        return token

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = self.identifier("a label key")
            validate_key(key)
            return Requirement(key, "!")
        key = self.identifier("a label key")
        validate_key(key)
        token = self.peek()
        if token is None or token == ",":
            return Requirement(key, "exists")
        if token in ("=", "==", "!="):
            self.take()
            value = self._value()
            return Requirement(key, "!=" if token == "!=" else "=", (value,))
        if token in ("<", ">"):
            self.take()
            value = self._value()
            if not re.fullmatch(r"-?[0-9]+", value):
                raise SelectorError(
                    f"cannot parse selector {self.text!r}: {value!r} is not an integer"
                )
            return Requirement(key, "gt" if token == ">" else "lt", (value,))
        if token in ("in", "notin"):
            self.take()
            if self.take() != "(":
                self.index -= 1
                raise self.fail("'('")
            values: set[str] = set()
            if self.peek() == ")":
                raise SelectorError(
                    f"cannot parse selector {self.text!r}: the values of {token!r} can't be empty"
                )
            while True:
                if self.peek() in (",", ")"):
                    values.add("")
                else:
                    values.add(self._value())
                separator = self.take()
                if separator == ")":
                    break
                if separator != ",":
                    self.index -= 1
                    raise self.fail("',' or ')'")
            return Requirement(key, "in" if token == "in" else "notin", tuple(sorted(values)))
        raise self.fail("an operator (=, ==, !=, in, notin, <, >) or ','")

    def _value(self) -> str:
        token = self.peek()
        if token is None or token in _SPECIAL:
            value = ""  # k=  selects an empty value, as in Kubernetes
        else:
            self.index += 1
            value = token
        validate_value(value)
        return value

    def parse(self) -> list[Requirement]:
        if not self.tokens:
            return []
        requirements = [self.requirement()]
        while self.peek() is not None:
            if self.take() != ",":
                self.index -= 1
                raise self.fail("','")
            requirements.append(self.requirement())
        return requirements


def parse_selector(text: str) -> list[Requirement]:
    """Parse a selector string; requirements come back sorted by key (stable)."""
    return sorted(_Parser(text).parse(), key=lambda requirement: requirement.key)


def selector_from_labels(labels: Mapping[str, str]) -> list[Requirement]:
    """A label map as equality requirements, validated, sorted by key."""
    requirements: list[Requirement] = []
    for key in sorted(labels):
        validate_key(key)
        validate_value(labels[key])
        requirements.append(Requirement(key, "=", (labels[key],)))
    return requirements


def format_selector(requirements: Sequence[Requirement]) -> str:
    """The normalised string kubectl would print (``app=api,tier in (edge,web)``)."""
    return ",".join(str(requirement) for requirement in requirements)


def matches(requirements: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """True when every requirement holds for ``labels`` (an empty selector matches all)."""
    return all(requirement.matches(labels) for requirement in requirements)
