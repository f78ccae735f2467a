"""Listen addresses: every row of wire-protocol.md §11.1, with client-go's texts."""

from __future__ import annotations

import pytest

from pfcompose.config import AddressError, ListenAddress, parse_addresses

V4_ALL = ListenAddress("127.0.0.1", "tcp4", "all")
V6_ALL = ListenAddress("::1", "tcp6", "all")

ROWS = [
    (["localhost"], (V4_ALL, V6_ALL)),
    (["0.0.0.0"], (ListenAddress("0.0.0.0", "tcp4", "any"),)),
    (["010.000.000.001"], (ListenAddress("010.000.000.001", "tcp4", "any"),)),  # sloppy
    (["::"], (ListenAddress("::", "tcp6", "any"),)),
    (["::1"], (ListenAddress("::1", "tcp6", "any"),)),
    (["::ffff:127.0.0.1"], (ListenAddress("::ffff:127.0.0.1", "tcp4", "any"),)),  # To4()
    # de-duplication: an explicit 127.0.0.1 after localhost overrides it to mode any ...
    (["localhost", "127.0.0.1"], (ListenAddress("127.0.0.1", "tcp4", "any"), V6_ALL)),
    # ... and listed before, localhost does not override it
    (["127.0.0.1", "localhost"], (ListenAddress("127.0.0.1", "tcp4", "any"), V6_ALL)),
    (["localhost", "localhost"], (V4_ALL, V6_ALL)),
    # sorted by address string
    (["::1", "127.0.0.1"], (ListenAddress("127.0.0.1", "tcp4", "any"),
                            ListenAddress("::1", "tcp6", "any"))),
    (["192.168.1.5", "10.0.0.1"], (ListenAddress("10.0.0.1", "tcp4", "any"),
                                   ListenAddress("192.168.1.5", "tcp4", "any"))),
]  # fmt: skip


@pytest.mark.parametrize(("addresses", "expected"), ROWS)
def test_rows(addresses: list[str], expected: tuple[ListenAddress, ...]) -> None:
    assert parse_addresses(addresses) == expected


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (["LOCALHOST"], "LOCALHOST is not a valid IP"),
        (["my.host"], "my.host is not a valid IP"),
        (["[::1]"], "[::1] is not a valid IP"),
        (["256.0.0.1"], "256.0.0.1 is not a valid IP"),
        (["fe80::1%eth0"], "fe80::1%eth0 is not a valid IP"),
        (["localhost", ""], " is not a valid IP"),
        ([], "you must specify at least 1 address"),
    ],
)
def test_errors(addresses: list[str], message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_addresses(addresses)
    assert str(info.value) == message
