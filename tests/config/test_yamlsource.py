"""The YAML layer: YAML 1.2 scalars (the 8080:80 trap), duplicate keys, anchors, positions."""

from __future__ import annotations

from pfcompose.config.yamlsource import Map, Scalar, find, load_yaml, to_plain


def load(text: str) -> object:
    tree, problems = load_yaml(text, "f.yaml")
    assert problems == []
    return to_plain(tree)


def test_the_8080_80_trap_stays_a_string() -> None:
    # PyYAML's YAML 1.1 resolver would give the sexagesimal integer 484880.
    assert load("ports: [8080:80, 1:30, 15432:5432]") == {
        "ports": ["8080:80", "1:30", "15432:5432"]
    }


def test_yaml_1_2_core_schema() -> None:
    assert load("a: [on, yes, off, no, y, true, False, ~, null, 0x1F, 0o17, 010, 1_000, 2.5, "
                "2001-12-14, .inf, '5']") == {
        "a": ["on", "yes", "off", "no", "y", True, False, None, None, 31, 15, 10, "1_000", 2.5,
              "2001-12-14", float("inf"), "5"]
    }  # fmt: skip


def test_anchors_aliases_and_merge_keys() -> None:
    text = (
        "x-base: &base {namespace: a, keepalive: 1}\n"
        "x-more: &more {namespace: b, transport: spdy}\n"
        "one: {<<: *base, keepalive: 2}\n"
        "two: {<<: [*base, *more]}\n"
        "three: *base\n"
    )
    plain = load(text)
    assert isinstance(plain, dict)
    assert plain["one"] == {"namespace": "a", "keepalive": 2}
    assert plain["two"] == {"namespace": "a", "keepalive": 1, "transport": "spdy"}
    assert plain["three"] == {"namespace": "a", "keepalive": 1}


def test_merged_values_keep_the_position_of_the_anchor() -> None:
    tree, _ = load_yaml("x: &a {k: v}\ny:\n  <<: *a\n  z: 1\n", "f.yaml")
    node = find(tree, "y", "k")
    assert isinstance(node, Scalar)
    assert (node.pos.line, node.pos.column) == (1, 11)
    z = find(tree, "y", "z")
    assert z is not None and (z.pos.line, z.pos.column) == (4, 6)


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    tree, problems = load_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    assert sorted(str(p) for p in problems) == [
        'f.yaml:4:3: b.c: duplicate key "c" (first defined at line 3)',
        'f.yaml:5:1: a: duplicate key "a" (first defined at line 1)',
    ]
    assert isinstance(tree, Map)


def test_empty_document_is_none() -> None:
    assert load_yaml("", "f.yaml") == (None, [])
    assert load_yaml("# only a comment\n", "f.yaml") == (None, [])


def test_unsafe_tags_are_refused() -> None:
    _, problems = load_yaml("a: !!python/object/apply:os.system [ls]\n", "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:1:4: a: unsupported tag !!python/object/apply:os.system"
    ]


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    _, problems = load_yaml("a: &x [*x]\n", "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:1:4: a[0]: an alias refers to a node that contains it"
    ]


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    _, problems = load_yaml("\n".join(lines) + "\n", "f.yaml")
    assert len(problems) == 1
    assert problems[0].message == "document is too large (alias expansion)"
