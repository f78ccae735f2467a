"""Listeners behave as client-go's (wire-protocol.md §11.1), texts included."""

from __future__ import annotations

import socket

import pytest
import trio

from pfcompose.config import parse_addresses
from pfcompose.up.listeners import bind_port, bind_port_sync, join_host_port


def _occupy(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, 0))
    sock.listen(1)
    return sock


def test_join_host_port() -> None:
    assert join_host_port("127.0.0.1", 80) == "127.0.0.1:80"
    assert join_host_port("::1", 80) == "[::1]:80"


def test_random_port_is_chosen_once_and_reused_on_every_address() -> None:
    bound = bind_port_sync(parse_addresses(["localhost"]), 0)
    try:
        assert not bound.failed and bound.errors == []
        assert bound.local != 0
        ports = {sock.getsockname()[1] for _, sock in bound.sockets}
        assert ports == {bound.local}
        assert [entry.address for entry, _ in bound.sockets] == ["127.0.0.1", "::1"]
    finally:
        bound.close()


def test_localhost_survives_one_family_occupied_in_mode_all() -> None:
    blocker = _occupy(socket.AF_INET, "127.0.0.1")
    port = blocker.getsockname()[1]
    try:
        bound = bind_port_sync(parse_addresses(["localhost"]), port)
        try:
            assert not bound.failed  # ::1 bound: mode "all" needs every address to fail
            assert [entry.address for entry, _ in bound.sockets] == ["::1"]
            assert bound.errors == [
                f"unable to create listener: Error listen tcp4 127.0.0.1:{port}: "
                "bind: address already in use"
            ]
        finally:
            bound.close()
    finally:
        blocker.close()


def test_explicit_address_fails_in_mode_any_and_keeps_the_others() -> None:
    blocker = _occupy(socket.AF_INET, "127.0.0.1")
    port = blocker.getsockname()[1]
    try:
        bound = bind_port_sync(parse_addresses(["127.0.0.1", "::1"]), port)
        try:
            assert bound.failed
            # The listener that did bind stays open and serves, as in client-go.
            assert [entry.address for entry, _ in bound.sockets] == ["::1"]
            assert bound.failure_message() == (
                f"Unable to listen on port {port}: Listeners failed to create with the "
                f"following errors: [unable to create listener: Error listen tcp4 "
                f"127.0.0.1:{port}: bind: address already in use]"
            )
        finally:
            bound.close()
    finally:
        blocker.close()


def test_every_address_occupied_fails_in_mode_all() -> None:
    blocker4 = _occupy(socket.AF_INET, "127.0.0.1")
    port = blocker4.getsockname()[1]
    try:
        blocker6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        blocker6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            blocker6.bind(("::1", port))
        except OSError:
            blocker6.close()
            pytest.skip("port not free on ::1")
        blocker6.listen(1)
        try:
            bound = bind_port_sync(parse_addresses(["localhost"]), port)
            assert bound.failed and bound.sockets == []
            assert bound.errors == [
                f"unable to create listener: Error listen tcp4 127.0.0.1:{port}: "
                "bind: address already in use",
                f"unable to create listener: Error listen tcp6 [::1]:{port}: "
                "bind: address already in use",
            ]
        finally:
            blocker6.close()
    finally:
        blocker4.close()


async def test_a_bound_listener_accepts() -> None:
    bound, listeners = await bind_port(parse_addresses(["127.0.0.1"]), 0)
    (_, listener), = listeners
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", bound.local)
        server = await listener.accept()
        await client.send_all(b"x")
        assert await server.receive_some(1) == b"x"
        await client.aclose()
        await server.aclose()


def test_sloppy_ipv4_binds_its_canonical_address() -> None:
    bound = bind_port_sync(parse_addresses(["127.000.000.001"]), 0)
    try:
        assert not bound.failed
        assert bound.sockets[0][1].getsockname()[0] == "127.0.0.1"
    finally:
        bound.close()
