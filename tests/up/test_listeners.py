"""Listeners behave as client-go's (wire-protocol.md §11.1), texts included."""

from __future__ import annotations

import socket

import pytest
import trio

from pfcompose.config import parse_addresses
from pfcompose.listeners import bind_port, join_host_port


def _occupy(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, 0))
    sock.listen(1)
    return sock


async def _close_all(bound) -> None:  # type: ignore[no-untyped-def]
    for _, listener in bound.listeners:
        await listener.aclose()


def test_join_host_port() -> None:
    assert join_host_port("127.0.0.1", 80) == "127.0.0.1:80"
    assert join_host_port("::1", 80) == "[::1]:80"


async def test_random_port_is_chosen_once_and_reused_on_every_address() -> None:
    bound = await bind_port(parse_addresses(["localhost"]), 0)
    try:
        assert not bound.failed and bound.errors == []
        assert bound.local != 0
        ports = {listener.socket.getsockname()[1] for _, listener in bound.listeners}
        assert ports == {bound.local}
        assert [entry.address for entry, _ in bound.listeners] == ["127.0.0.1", "::1"]
    finally:
        await _close_all(bound)


async def test_localhost_survives_one_family_occupied_in_mode_all() -> None:
    blocker = _occupy(socket.AF_INET, "127.0.0.1")
    port = blocker.getsockname()[1]
    try:
        bound = await bind_port(parse_addresses(["localhost"]), port)
        try:
            assert not bound.failed  # ::1 bound: mode "all" needs every address to fail
            assert [entry.address for entry, _ in bound.listeners] == ["::1"]
            assert bound.errors == [
                f"unable to create listener: Error listen tcp4 127.0.0.1:{port}: "
                "bind: address already in use"
            ]
        finally:
            await _close_all(bound)
    finally:
        blocker.close()


async def test_explicit_address_fails_in_mode_any_and_keeps_the_others() -> None:
    blocker = _occupy(socket.AF_INET, "127.0.0.1")
    port = blocker.getsockname()[1]
    try:
        bound = await bind_port(parse_addresses(["127.0.0.1", "::1"]), port)
        try:
            assert bound.failed
            # The listener that did bind stays open and serves, as in client-go.
            assert [entry.address for entry, _ in bound.listeners] == ["::1"]
            assert bound.failure_message() == (
                f"Unable to listen on port {port}: Listeners failed to create with the "
                f"following errors: [unable to create listener: Error listen tcp4 "
                f"127.0.0.1:{port}: bind: address already in use]"
            )
        finally:
            await _close_all(bound)
    finally:
        blocker.close()


async def test_every_address_occupied_fails_in_mode_all() -> None:
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
            bound = await bind_port(parse_addresses(["localhost"]), port)
            assert bound.failed and bound.listeners == []
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
    bound = await bind_port(parse_addresses(["127.0.0.1"]), 0)
    try:
        _, listener = bound.listeners[0]
        client = await trio.open_tcp_stream("127.0.0.1", bound.local)
        server = await listener.accept()
        await client.send_all(b"x")
        assert await server.receive_some(1) == b"x"
        await client.aclose()
        await server.aclose()
    finally:
        await _close_all(bound)
