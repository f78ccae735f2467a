"""Malformed files: each one asserts the exact FILE:LINE:COL: path: message lines."""
# ruff: noqa: E501 - expected lines are kept whole so they read as the user sees them

from __future__ import annotations

from pathlib import Path

import pytest

from pfcompose.config import ConfigErrors, load_plan

CASES = [
    pytest.param(
        "forwards:\n  db: {target: a, ports: [1}\n",
        ["f.yaml:2:28: while parsing a flow sequence: expected ',' or ']', but got '}'"],
        id="yaml_unclosed_flow",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n   ports: [1]\n",
        [
            "f.yaml:4:4: while parsing a block mapping: expected <block end>, but found '<block mapping start>'"
        ],
        id="yaml_bad_indent",
    ),
    pytest.param(
        "forwards:\n\tdb: {}\n",
        [
            "f.yaml:2:1: while scanning for the next token: found character '\\t' that cannot start any token"
        ],
        id="yaml_tab",
    ),
    pytest.param(
        'forwards:\n  db:\n    target: "a\n',
        ["f.yaml:4:1: while scanning a quoted scalar: found unexpected end of stream"],
        id="yaml_unclosed_quote",
    ),
    pytest.param(
        "forwards: {}\n---\nforwards: {}\n",
        ["f.yaml:2:1: expected a single document in the stream: but found another document"],
        id="yaml_two_documents",
    ),
    pytest.param(
        "- forwards\n",
        ["f.yaml:1:1: the file must be a mapping with the keys name, defaults and forwards"],
        id="not_a_mapping",
    ),
    pytest.param(
        "forwards:\n  db: {target: a, ports: [1]}\n  db: {target: b, ports: [2]}\n",
        ['f.yaml:3:3: forwards.db: duplicate key "db" (first defined at line 2)'],
        id="duplicate_forward",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    target: b\n",
        ['f.yaml:5:5: forwards.db.target: duplicate key "target" (first defined at line 3)'],
        id="duplicate_field",
    ),
    pytest.param(
        "forward:\n  db: {target: a, ports: [1]}\n",
        [
            'f.yaml:1:1: forward: unknown key, did you mean "forwards"?',
            "f.yaml:1:1: forwards: required key is missing",
        ],
        id="unknown_top_key",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    port: [1]\n",
        [
            'f.yaml:4:5: forwards.db.port: unknown key, did you mean "ports"?',
            "f.yaml:2:3: forwards.db.ports: you must specify at least 1 port",
        ],
        id="unknown_forward_key",
    ),
    pytest.param(
        "defaults:\n  namespce: x\nforwards: {}\n",
        ['f.yaml:2:3: defaults.namespce: unknown key, did you mean "namespace"?'],
        id="unknown_defaults_key",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    reconnect: {max_backof: 1s}\n",
        ['f.yaml:5:17: forwards.db.reconnect.max_backof: unknown key, did you mean "max_backoff"?'],
        id="unknown_reconnect_key",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports:\n      - {locl: 1, remote: 2}\n",
        ['f.yaml:5:10: forwards.db.ports[0].locl: unknown key, did you mean "local"?'],
        id="unknown_long_port_key",
    ),
    pytest.param(
        "name: x\n",
        ["f.yaml:1:1: forwards: required key is missing"],
        id="missing_forwards",
    ),
    pytest.param(
        "forwards: [db]\n",
        ["f.yaml:1:11: forwards: forwards must be a mapping of name -> forward"],
        id="forwards_not_mapping",
    ),
    pytest.param(
        "forwards:\n  db:\n",
        ["f.yaml:2:6: forwards.db: a forward must be a mapping (target or selector, ports, ...)"],
        id="forward_null",
    ),
    pytest.param(
        "forwards:\n  DB: {target: a, ports: [1]}\n",
        [
            'f.yaml:2:3: forwards.DB: invalid forward name "DB": use lowercase letters, digits, "_", "." and "-", starting with a letter or digit'
        ],
        id="bad_forward_name",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    selector: app=a\n    ports: [1]\n",
        ["f.yaml:4:15: forwards.db.selector: set either target or selector, not both"],
        id="target_and_selector",
    ),
    pytest.param(
        "forwards:\n  db:\n    ports: [1]\n",
        ["f.yaml:2:3: forwards.db: a forward needs a target or a selector"],
        id="neither_target_nor_selector",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: cm/config\n    ports: [1]\n",
        [
            'f.yaml:3:13: forwards.db.target: unknown kind "cm": use pod, service (svc), deployment (deploy), statefulset (sts) or replicaset (rs)'
        ],
        id="unknown_kind",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: pod/Bad_Name\n    ports: [1]\n",
        [
            'f.yaml:3:13: forwards.db.target: invalid name "Bad_Name": lowercase letters, digits, "-" and ".", starting and ending with a letter or digit'
        ],
        id="bad_target_name",
    ),
    pytest.param(
        "forwards:\n  db:\n    selector: 'app in (a'\n    ports: [1]\n",
        [
            "f.yaml:3:15: forwards.db.selector: cannot parse selector 'app in (a': expected ',' or ')', found the end"
        ],
        id="bad_selector",
    ),
    pytest.param(
        "forwards:\n  db:\n    selector: {}\n    ports: [1]\n",
        ["f.yaml:3:15: forwards.db.selector: a selector must select something; it is empty"],
        id="empty_selector_map",
    ),
    pytest.param(
        "forwards:\n  db:\n    selector: [a]\n    ports: [1]\n",
        [
            'f.yaml:3:15: forwards.db.selector: a selector is a label map or a string such as "app=api,tier in (web)"'
        ],
        id="selector_wrong_type",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: []\n",
        ["f.yaml:4:12: forwards.db.ports: you must specify at least 1 port"],
        id="no_ports",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n",
        ["f.yaml:2:3: forwards.db.ports: you must specify at least 1 port"],
        id="ports_missing",
    ),
    pytest.param(
        'forwards:\n  db:\n    target: a\n    ports: ["5432", "8888:0"]\n',
        ["f.yaml:4:21: forwards.db.ports[1]: remote port must be > 0"],
        id="remote_zero",
    ),
    pytest.param(
        'forwards:\n  db:\n    target: a\n    ports: ["1:2:3"]\n',
        ["f.yaml:4:13: forwards.db.ports[0]: invalid port format '1:2:3'"],
        id="three_parts",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [70000]\n",
        [
            "f.yaml:4:13: forwards.db.ports[0]: error parsing local port '70000': strconv.ParseUint: parsing \"70000\": value out of range"
        ],
        id="local_out_of_range",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [abc:80]\n",
        [
            "f.yaml:4:13: forwards.db.ports[0]: error parsing local port 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax"
        ],
        id="local_not_number",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: ['8888:']\n",
        [
            "f.yaml:4:13: forwards.db.ports[0]: error parsing remote port '': strconv.ParseUint: parsing \"\": invalid syntax"
        ],
        id="remote_empty",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1.5]\n",
        [
            'f.yaml:4:13: forwards.db.ports[0]: a port is a number, a string such as "8080:80" or a mapping {local, remote}'
        ],
        id="port_wrong_type",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [true]\n",
        [
            'f.yaml:4:13: forwards.db.ports[0]: a port is a number, a string such as "8080:80" or a mapping {local, remote}'
        ],
        id="port_bool",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports:\n      - local: 1\n        remote: 0\n",
        ["f.yaml:6:17: forwards.db.ports[0].remote: remote port must be > 0"],
        id="long_remote_zero",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports:\n      - {local: -1, remote: 80}\n",
        [
            "f.yaml:5:17: forwards.db.ports[0].local: error parsing local port '-1': strconv.ParseUint: parsing \"-1\": invalid syntax"
        ],
        id="long_local_negative",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports:\n      - {local: 1}\n",
        ["f.yaml:5:9: forwards.db.ports[0].remote: required key is missing"],
        id="long_missing_remote",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports:\n      - {remote: http}\n",
        [
            "f.yaml:5:18: forwards.db.ports[0].remote: a named remote port needs a local port (local: 0 for a random one)"
        ],
        id="long_named_without_local",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    addresses: [localhost, my.host]\n",
        ["f.yaml:5:28: forwards.db.addresses[1]: my.host is not a valid IP"],
        id="bad_address",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    addresses: []\n",
        ["f.yaml:5:16: forwards.db.addresses: you must specify at least 1 address"],
        id="no_addresses",
    ),
    pytest.param(
        "defaults:\n  addresses: [LOCALHOST]\nforwards:\n  db: {target: a, ports: [1]}\n",
        ["f.yaml:2:15: defaults.addresses[0]: LOCALHOST is not a valid IP"],
        id="bad_default_address",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    transport: http2\n",
        [
            "f.yaml:5:16: forwards.db.transport: input should be 'auto', 'spdy', 'spdy-over-websocket' or 'websocket'"
        ],
        id="bad_transport",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    keepalive: 5 s\n",
        [
            'f.yaml:5:16: forwards.db.keepalive: invalid duration \'5 s\': use seconds (a number >= 0) or a string such as "250ms", "10s", "2m"'
        ],
        id="bad_duration",
    ),
    pytest.param(
        "defaults:\n  reconnect: {hold: -1}\nforwards: {}\n",
        [
            'f.yaml:2:21: defaults.reconnect.hold: invalid duration -1: use seconds (a number >= 0) or a string such as "250ms", "10s", "2m"'
        ],
        id="negative_duration",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    reconnect: {initial_backoff: 20s}\n",
        [
            "f.yaml:5:34: forwards.db.reconnect.initial_backoff: initial_backoff (20s) must not exceed max_backoff (10s)"
        ],
        id="backoff_order",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    quiet_connections: maybe\n",
        [
            "f.yaml:5:24: forwards.db.quiet_connections: input should be a valid boolean, unable to interpret input"
        ],
        id="bad_bool",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    namespace: Prod\n    ports: [1]\n",
        [
            'f.yaml:4:16: forwards.db.namespace: invalid namespace "Prod": a DNS label (lowercase letters, digits, "-")'
        ],
        id="bad_namespace",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    namespace: [a]\n    ports: [1]\n",
        ["f.yaml:4:16: forwards.db.namespace: input should be a valid string"],
        id="namespace_not_string",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: a\n    ports: [1]\n    profiles: [' x']\n",
        [
            "f.yaml:5:16: forwards.db.profiles[0]: string should match pattern '^[a-zA-Z0-9][a-zA-Z0-9_.-]*$'"
        ],
        id="bad_profile",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: ${TARGET:?set TARGET}\n    ports: [1]\n",
        [
            "f.yaml:3:13: forwards.db.target: required variable TARGET is missing a value: set TARGET"
        ],
        id="required_variable",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: pod/${X\n    ports: [1]\n",
        [
            'f.yaml:3:13: forwards.db.target: invalid interpolation format in "pod/${X": write $$ for a literal $'
        ],
        id="bad_interpolation",
    ),
    pytest.param(
        "forwards:\n  db:\n    target: !!python/name:os.system a\n    ports: [1]\n",
        ["f.yaml:3:13: forwards.db.target: unsupported tag !!python/name:os.system"],
        id="unsafe_tag",
    ),
    pytest.param(
        "forwards:\n  db:\n    <<: 1\n    target: a\n",
        ["f.yaml:3:9: forwards.db: a << merge key needs a mapping or a list of mappings"],
        id="merge_not_mapping",
    ),
    pytest.param(
        "name: [a]\nforwards: {}\n",
        ["f.yaml:1:7: name: the name must be a string"],
        id="name_not_string",
    ),
    pytest.param(
        "forwards:\n  a: {target: a, ports: [8080]}\n  b: {target: b, ports: ['8080:80']}\n",
        [
            "f.yaml:3:26: forwards.b.ports[0]: local port 8080 on 127.0.0.1 conflicts with forwards.a.ports[0] on 127.0.0.1 (f.yaml:2:26)"
        ],
        id="conflict",
    ),
    pytest.param(
        "forwards:\n  db:\n    selector: {app: 'a b'}\n    ports: [1]\n",
        [
            "f.yaml:3:15: forwards.db.selector: invalid label value 'a b': at most 63 characters of [A-Za-z0-9-_.], starting and ending with a letter or digit"
        ],
        id="label_value",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_malformed(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("f.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_plan([Path("f.yaml")], environ={})
    assert [str(problem) for problem in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


def test_all_problems_of_a_file_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("f.yaml").write_text(
        "forwards:\n"
        "  db:\n"
        "    target: pod/postgres-0\n"
        '    ports: ["5432", "8888:0", 70000]\n'
        "    namspace: x\n"
        "  api:\n"
        "    selector: {app: api}\n"
        "    ports: [8080]\n"
        "    addresses: [my.host]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_plan([Path("f.yaml")], environ={})
    assert [str(problem) for problem in info.value.problems] == [
        "f.yaml:4:21: forwards.db.ports[1]: remote port must be > 0",
        "f.yaml:4:31: forwards.db.ports[2]: error parsing local port '70000': "
        'strconv.ParseUint: parsing "70000": value out of range',
        'f.yaml:5:5: forwards.db.namspace: unknown key, did you mean "namespace"?',
        "f.yaml:9:17: forwards.api.addresses[0]: my.host is not a valid IP",
    ]
