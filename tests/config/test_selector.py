"""Label selectors: parsing, normalisation (kubectl's order) and matching."""

from __future__ import annotations

import pytest

from pfcompose.config.selector import (
    SelectorError,
    format_selector,
    matches,
    parse_selector,
    selector_from_labels,
)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("app=api", "app=api"),
        ("app==api", "app=api"),
        ("tier in (web,edge),app=api", "app=api,tier in (edge,web)"),
        ("app!=api", "app!=api"),
        ("tier notin ( b , a )", "tier notin (a,b)"),
        ("canary", "canary"),
        ("!canary,app=x", "app=x,!canary"),
        ("example.com/team=core", "example.com/team=core"),
        ("replicas>2", "replicas>2"),
        ("app=", "app="),
    ],
)
def test_normalisation(text: str, normalised: str) -> None:
    assert format_selector(parse_selector(text)) == normalised


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app in (a", "cannot parse selector 'app in (a': expected ',' or ')', found the end"),
        ("app=a b", "cannot parse selector 'app=a b': expected ',', found 'b'"),
        ("=x", "cannot parse selector '=x': expected a label key, found '='"),
        ("app in ()", "cannot parse selector 'app in ()': the values of 'in' can't be empty"),
        ("app in a", "cannot parse selector 'app in a': expected '(', found 'a'"),
        ("a>b", "cannot parse selector 'a>b': 'b' is not an integer"),
        ("Bad.Prefix/x=1", "invalid label key 'Bad.Prefix/x': the prefix must be a DNS subdomain"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert str(info.value) == message


def test_matching() -> None:
    labels = {"app": "api", "tier": "web", "replicas": "3"}
    assert matches(parse_selector("app=api,tier in (web,edge)"), labels)
    assert not matches(parse_selector("app=api,canary"), labels)
    assert matches(parse_selector("!canary,tier notin (db),replicas>2"), labels)
    assert not matches(parse_selector("replicas<3"), labels)
    assert matches(parse_selector("app!=web"), {})
    assert matches([], labels)


def test_label_map() -> None:
    assert format_selector(selector_from_labels({"tier": "web", "app": "api"})) == (
        "app=api,tier=web"
    )
    with pytest.raises(SelectorError):
        selector_from_labels({"app": "bad value"})
