"""Interpolation with compose's semantics."""

from __future__ import annotations

import pytest

from pfcompose.config.interpolate import InterpolationError, interpolate, substitute
from pfcompose.config.yamlsource import find, load_yaml, to_plain

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("$SET", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("${SET:-d}", "value"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("cost: $$5", "cost: $5"),
        ("${PORT}:80", "8080:80"),
        ("${SET:?never}", "value"),
    ],
)
def test_substitute(template: str, expected: str) -> None:
    warnings: list[str] = []
    assert substitute(template, ENV, warnings) == expected
    assert warnings == []


def test_unset_without_default_warns_and_is_empty() -> None:
    warnings: list[str] = []
    assert substitute("x${UNSET}y$ALSO", ENV, warnings) == "xy"
    assert warnings == [
        'The "UNSET" variable is not set. Defaulting to a blank string.',
        'The "ALSO" variable is not set. Defaulting to a blank string.',
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "${UNSET:?set UNSET first}",
            "required variable UNSET is missing a value: set UNSET first",
        ),
        ("${EMPTY:?empty}", "required variable EMPTY is missing a value: empty"),
        ("${UNSET?}", "required variable UNSET is missing a value"),
        ("${SET", 'invalid interpolation format in "${SET": write $$ for a literal $'),
        ("${}", 'invalid interpolation format in "${}": write $$ for a literal $'),
        ("${SET:x}", 'invalid interpolation format in "${SET:x}": write $$ for a literal $'),
        ("5$", 'invalid interpolation format in "5$": write $$ for a literal $'),
    ],
)
def test_errors(template: str, message: str) -> None:
    with pytest.raises(InterpolationError) as info:
        substitute(template, ENV)
    assert str(info.value) == message


def test_empty_required_without_colon_is_fine() -> None:
    assert substitute("${EMPTY?msg}", ENV) == ""


def test_tree_interpolation_keeps_positions_and_skips_keys_and_extensions() -> None:
    tree, _ = load_yaml(
        "x-skip: ${NOPE}\nforwards:\n  ${SET}:\n    target: pod/${SET}\n    ports: [$$1]\n",
        "f.yaml",
    )
    assert tree is not None
    result, errors, warnings = interpolate(tree, ENV)
    assert errors == [] and warnings == []
    assert to_plain(result) == {
        "x-skip": "${NOPE}",
        "forwards": {"${SET}": {"target": "pod/value", "ports": ["$1"]}},
    }
    target = find(result, "forwards", "${SET}", "target")
    assert target is not None and (target.pos.line, target.pos.column) == (4, 13)


def test_tree_interpolation_reports_positions() -> None:
    tree, _ = load_yaml(
        "forwards:\n  db:\n    namespace: ${NS:?need NS}\n    target: $X\n", "f.yaml"
    )
    assert tree is not None
    _, errors, warnings = interpolate(tree, {})
    assert [str(p) for p in errors] == [
        "f.yaml:3:16: forwards.db.namespace: required variable NS is missing a value: need NS"
    ]
    assert [str(p) for p in warnings] == [
        'f.yaml:4:13: forwards.db.target: The "X" variable is not set. '
        "Defaulting to a blank string."
    ]
