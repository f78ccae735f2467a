"""Port specs: every row of wire-protocol.md §11.2, named ports, and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfcompose._util.gotext import go_quote
from pfcompose.config import PortMap, PortSpecError, parse_port
from pfcompose.config.ports import parse_uint16

ACCEPTED = [
    ("5000", PortMap(5000, 5000)),
    ("8888:5000", PortMap(8888, 5000)),
    (":5000", PortMap(0, 5000)),
    ("0:5000", PortMap(0, 5000)),
    (5000, PortMap(5000, 5000)),
    ("8080:http", PortMap(8080, "http")),
    (":metrics", PortMap(0, "metrics")),
    ("65535:1", PortMap(65535, 1)),
]


@pytest.mark.parametrize(("spec", "expected"), ACCEPTED)
def test_accepted_rows(spec: str | int, expected: PortMap) -> None:
    assert parse_port(spec) == expected


REJECTED = [
    ("a:b:c", "invalid port format 'a:b:c'"),
    ("1:2:3", "invalid port format '1:2:3'"),
    (
        "abc:80",
        "error parsing local port 'abc': strconv.ParseUint: parsing \"abc\": invalid syntax",
    ),
    (
        "70000",
        "error parsing local port '70000': strconv.ParseUint: parsing \"70000\": "
        "value out of range",
    ),
    ("-1", "error parsing local port '-1': strconv.ParseUint: parsing \"-1\": invalid syntax"),
    ("+80", "error parsing local port '+80': strconv.ParseUint: parsing \"+80\": invalid syntax"),
    (" 80", "error parsing local port ' 80': strconv.ParseUint: parsing \" 80\": invalid syntax"),
    ("8888:", "error parsing remote port '': strconv.ParseUint: parsing \"\": invalid syntax"),
    ("0", "remote port must be > 0"),
    ("8888:0", "remote port must be > 0"),
    (-1, "error parsing local port '-1': strconv.ParseUint: parsing \"-1\": invalid syntax"),
    (
        "80:70000",
        "error parsing remote port '70000': strconv.ParseUint: parsing \"70000\": "
        "value out of range",
    ),
    (
        "80:HTTP",
        "error parsing remote port 'HTTP': strconv.ParseUint: parsing \"HTTP\": invalid syntax",
    ),
]


@pytest.mark.parametrize(("spec", "message"), REJECTED)
def test_rejected_rows(spec: str | int, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_port(spec)
    assert str(info.value) == message


def test_bare_name_gets_a_hint() -> None:
    with pytest.raises(PortSpecError) as info:
        parse_port("http")
    assert str(info.value) == (
        "error parsing local port 'http': strconv.ParseUint: parsing \"http\": invalid syntax"
        ' (a named port needs a local port: ":http" or "8080:http")'
    )


def test_overflow_is_detected_while_scanning_like_go() -> None:
    with pytest.raises(PortSpecError, match="value out of range"):
        parse_uint16("70000x")
    with pytest.raises(PortSpecError, match="invalid syntax"):
        parse_uint16("x70000")


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'


names = st.from_regex(r"\A[a-z][a-z0-9]{0,9}\Z")
remotes = st.integers(1, 65535) | names


@given(local=st.integers(0, 65535), remote=remotes)
def test_accepted_specs_round_trip(local: int, remote: int | str) -> None:
    port = parse_port(f"{local}:{remote}")
    assert port == PortMap(local, remote)
    assert parse_port(str(port)) == port
    if local == 0:
        assert parse_port(f":{remote}") == port
    if isinstance(remote, int):
        assert parse_port(str(remote)) == PortMap(remote, remote)
        assert parse_port(remote) == PortMap(remote, remote)


@given(st.text(max_size=20) | st.integers(-(10**6), 10**6))
def test_anything_either_parses_or_raises_the_typed_error(spec: str | int) -> None:
    try:
        port = parse_port(spec)
    except PortSpecError as exc:
        assert isinstance(exc, ValueError)
        assert str(exc)
        return
    assert 0 <= port.local <= 65535
    assert isinstance(port.remote, str) or 1 <= port.remote <= 65535
    assert parse_port(str(port)) == port
