"""The one line splitter (pfcompose/_util/lines.py) every newline-delimited reader uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pfcompose._util.lines import LineSplitter, LineTooLongError


def test_many_lines_in_one_chunk_and_the_rest_kept() -> None:
    s = LineSplitter(100)
    assert s.feed(b"a\nbb\n\nccc") == [b"a", b"bb", b""]
    assert s.pending == 3
    assert s.feed(b"c\nd") == [b"cccc"]
    assert s.finish() == b"d"
    assert s.pending == 0


def test_partial_lines_across_chunks() -> None:
    s = LineSplitter(100)
    out: list[bytes] = []
    for byte in b'{"x": 1}\n{"y": 2}\n':
        out += s.feed(bytes([byte]))
    assert out == [b'{"x": 1}', b'{"y": 2}']
    assert s.finish() == b""


def test_empty_input_and_eof() -> None:
    s = LineSplitter(10)
    assert s.feed(b"") == []
    assert s.finish() == b""
    assert s.feed(b"tail") == []
    assert s.feed(b"") == []
    assert s.finish() == b"tail"
    assert s.finish() == b""


def test_crlf_is_not_special() -> None:
    # no reader needs CRLF: the \r stays, as JSON and log text tolerate it
    assert LineSplitter(10).feed(b"a\r\nb\n") == [b"a\r", b"b"]


def test_bound_on_the_pending_rest() -> None:
    s = LineSplitter(4)
    assert s.feed(b"abcd") == []  # exactly the bound: fine
    with pytest.raises(LineTooLongError, match="line longer than 4 bytes"):
        s.feed(b"e")


def test_bound_on_a_complete_line() -> None:
    s = LineSplitter(4)
    assert s.feed(b"abcd\n") == [b"abcd"]
    with pytest.raises(LineTooLongError) as info:
        s.feed(b"ok\nabcde\n")
    assert info.value.limit == 4


def test_long_line_in_small_pieces_is_linear() -> None:
    s = LineSplitter(1 << 20)
    piece = b"x" * 1000
    for _ in range(1000):
        assert s.feed(piece) == []
    assert s.feed(b"\n") == [piece * 1000]


def test_the_splitter_loads_nothing_of_trio() -> None:
    probe = "import json, sys, pfcompose._util.lines; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    loaded = json.loads(out.stdout)
    assert not [m for m in loaded if m == "trio" or m.startswith("trio.")]
    assert [m for m in loaded if m.startswith("pfcompose")] == [
        "pfcompose",
        "pfcompose._util",
        "pfcompose._util.lines",
    ]
