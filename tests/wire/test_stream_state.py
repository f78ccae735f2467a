"""One owner of each stream's state: the core's StreamRecord, read by the trio driver.

The sans-IO ``SpdyConnection`` keeps a :class:`StreamRecord` per stream; a
``SpdyStream`` holds that very object and reports from it (``done``, EOF, resets,
may-I-send), so the two cannot disagree. The record stays readable after the core
forgets the stream. ``SpdySession`` and ``SpdyStream`` talk through public methods
only (checked on the source with ``ast``). The tests look at ``session._conn`` (the
core) on purpose: what they check is that the driver holds the core's own record.
"""

from __future__ import annotations

import ast
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from pfcompose.wire import session as session_module
from pfcompose.wire.session import SessionLost, SpdySession, SpdyStream, StreamReset, open_session
from pfcompose.wire.spdy import (
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    SYN_STREAM,
    HeaderCompressor,
    RstStatus,
    SpdyConnection,
    StreamOpened,
    StreamRecord,
    StreamState,
    control_frame,
)

DATA = {"streamType": "data", "port": "80", "requestID": "0"}


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[SpdySession, SpdySession]]:
    a, b = trio.testing.memory_stream_pair()
    async with open_session(a, "client") as client, open_session(b, "server") as server:
        yield client, server


async def opened(client: SpdySession, server: SpdySession) -> tuple[SpdyStream, SpdyStream]:
    """A stream the client opened and the server replied to: (client's, server's)."""
    local = await client.open_stream(DATA, wait=False)
    remote = await server.accept_stream()
    await remote.reply()
    await local.wait_replied()
    return local, remote


def agree(session: SpdySession, stream: SpdyStream, state: StreamState) -> None:
    """The core and the driver say the same about ``stream``, and it is ``state``."""
    core = session._conn
    record = stream.record
    assert core.stream_state(stream.stream_id) is state
    assert record.state is state
    live = core.stream_record(stream.stream_id)
    if state in (StreamState.CLOSED, StreamState.RESET):
        assert live is None  # forgotten by the core, still readable through the stream
        assert record.ended
    else:
        assert live is record  # the very object: one owner, no copy
        assert not record.ended


# --------------------------------------------------------------------------- the core alone


def test_core_record_is_live_then_ended_and_stays_readable() -> None:
    client, server = SpdyConnection("client"), SpdyConnection("server")
    sid = client.open_stream({"port": "80"})
    record = client.stream_record(sid)
    assert isinstance(record, StreamRecord)
    assert (record.stream_id, record.local, record.replied) == (sid, True, False)
    (event,) = server.receive_data(client.data_to_send())
    assert isinstance(event, StreamOpened) and event.record is server.stream_record(sid)
    remote = event.record
    assert remote is not None and not remote.local
    server.reply(sid)
    assert remote.replied
    client.receive_data(server.data_to_send())
    assert record.replied and record.state is StreamState.OPEN
    client.send_data(sid, b"x", fin=True)
    assert record.state is StreamState.HALF_CLOSED_LOCAL
    server.receive_data(client.data_to_send())
    assert remote.state is StreamState.HALF_CLOSED_REMOTE
    server.send_data(sid, b"", fin=True)
    client.receive_data(server.data_to_send())
    for conn, rec in ((client, record), (server, remote)):
        assert conn.stream_record(sid) is None
        assert rec.ended and rec.state is StreamState.CLOSED
        assert conn.stream_state(sid) is StreamState.CLOSED  # the core's memory of ended streams
        assert rec.reset_by is None and rec.reset_status == 0
    assert repr(record) == f"<StreamRecord {sid} closed>"


@pytest.mark.parametrize("who", ["local", "peer"])
def test_core_record_of_a_reset(who: str) -> None:
    client, server = SpdyConnection("client"), SpdyConnection("server")
    sid = client.open_stream({"port": "80"})
    record = client.stream_record(sid)
    assert record is not None
    server.receive_data(client.data_to_send())
    if who == "local":
        assert client.reset(sid, RstStatus.INTERNAL_ERROR)
    else:
        server.reset(sid, RstStatus.INTERNAL_ERROR)
        client.receive_data(server.data_to_send())
    assert record.reset_by == who and record.reset_status == RstStatus.INTERNAL_ERROR
    assert record.ended and record.state is StreamState.RESET
    assert client.stream_record(sid) is None and client.stream_state(sid) is StreamState.RESET


# --------------------------------------------------------------------------- core and driver agree


async def test_syn_reply_both_sides() -> None:
    async with pair() as (client, server):
        local = await client.open_stream(DATA, wait=False)
        assert not local.record.replied
        agree(client, local, StreamState.OPEN)
        remote = await server.accept_stream()
        assert remote.record is server._conn.stream_record(remote.stream_id)  # via StreamOpened
        assert not remote.record.replied
        await remote.reply()
        assert remote.record.replied
        await local.wait_replied()
        assert local.record.replied
        agree(client, local, StreamState.OPEN)
        agree(server, remote, StreamState.OPEN)
        assert not local.done and not remote.done


async def test_fin_both_ways() -> None:
    async with pair() as (client, server):
        local, remote = await opened(client, server)
        await local.send_all(b"ping")
        await local.send_eof()
        assert local.record.local_closed
        agree(client, local, StreamState.HALF_CLOSED_LOCAL)
        assert await remote.receive_some() == b"ping"
        assert await remote.receive_some() == b""  # the peer's FIN, from the record
        assert remote.record.remote_closed
        agree(server, remote, StreamState.HALF_CLOSED_REMOTE)
        assert not local.done and not remote.done
        await remote.send_all(b"pong")
        await remote.send_eof()
        assert await local.receive_some() == b"pong"
        assert await local.receive_some() == b""
        for session, stream in ((client, local), (server, remote)):
            agree(session, stream, StreamState.CLOSED)
            assert stream.done
            with pytest.raises(trio.ClosedResourceError, match="send_eof was already called"):
                await stream.send_all(b"late")


async def test_reset_by_the_peer() -> None:
    async with pair() as (client, server):
        local, remote = await opened(client, server)
        remote.reset(RstStatus.INTERNAL_ERROR)
        assert remote.record.reset_by == "local"
        agree(server, remote, StreamState.RESET)
        with pytest.raises(StreamReset) as info:
            await local.receive_some()
        assert info.value.status == local.record.reset_status == RstStatus.INTERNAL_ERROR
        assert local.record.reset_by == "peer"
        agree(client, local, StreamState.RESET)
        assert local.done and remote.done
        with pytest.raises(StreamReset):
            await local.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await remote.send_all(b"x")


async def test_reset_locally_after_fin_sends_nothing_and_is_recorded() -> None:
    async with pair() as (client, server):
        local, remote = await opened(client, server)
        await local.send_eof()
        local.reset()  # FIN already sent: no RST on the wire (spdystream)
        assert local.record.reset_by == "local" and local.record.local_closed
        agree(client, local, StreamState.RESET)
        assert await remote.receive_some() == b""
        await trio.testing.wait_all_tasks_blocked()
        assert remote.record.reset_by is None  # nothing reached the peer
        agree(server, remote, StreamState.HALF_CLOSED_REMOTE)


async def test_session_close_resets_in_the_core_but_streams_see_the_session_end() -> None:
    async with pair() as (client, server):
        local, remote = await opened(client, server)
        await client.aclose()
        assert local.record.reset_by == "local"  # aclose reset it in the core
        assert not local.done  # ...but it was not closed by its user, nor by the peer
        with pytest.raises(SessionLost):
            await local.receive_some()
        with pytest.raises(StreamReset):
            await remote.receive_some()


async def test_unidirectional_syn_with_fin_is_closed_both_ways_at_once() -> None:
    """The core never keeps such a stream; the driver's stream still has its record."""
    a, b = trio.testing.memory_stream_pair()
    async with open_session(b, "server") as server:
        block = HeaderCompressor().compress(DATA)
        payload = struct.pack(">IIBB", 1, 0, 0, 0) + block
        await a.send_all(control_frame(SYN_STREAM, FLAG_FIN | FLAG_UNIDIRECTIONAL, payload))
        stream = await server.accept_stream()
        assert stream.done and stream.record.ended
        agree(server, stream, StreamState.CLOSED)
        assert await stream.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError, match="send_eof was already called"):
            await stream.send_all(b"x")


async def test_headers_with_fin_end_the_peers_side_for_a_waiting_reader() -> None:
    """HEADERS+FIN closes the peer's side in the core (as in spdystream); the driver
    wakes a reader parked before it, which sees EOF (Kubernetes never sends HEADERS)."""
    a, b = trio.testing.memory_stream_pair()
    peer = SpdyConnection("server")
    async with open_session(a, "client") as client:
        stream = await client.open_stream(DATA, wait=False)
        peer.receive_data(await b.receive_some())
        peer.reply(stream.stream_id)
        await b.send_all(peer.data_to_send())
        await stream.wait_replied()
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await stream.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            peer.send_headers(stream.stream_id, {"x-done": "1"}, fin=True)
            await b.send_all(peer.data_to_send())
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # (a reader left parked would fail, not hang)
        assert got == [b""]
        agree(client, stream, StreamState.HALF_CLOSED_REMOTE)


# --------------------------------------------------------------------------- the narrow interface

SOURCE = Path(session_module.__file__)
ALLOWED = {("open_session", "session._run")}
"""Private access to a name other than ``self`` that is allowed: the module's
context manager starting the session it created."""


def _private_cross_access(tree: ast.Module) -> set[tuple[str, str]]:
    """(enclosing function, ``value._attr``) for every ``_``-attribute not on ``self``."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            where = node.name
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            found.add((where, f"{ast.unparse(node.value)}.{node.attr}"))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "<module>")
    return found


def test_session_and_stream_do_not_touch_each_others_private_attributes() -> None:
    """No ``stream._x`` in SpdySession, no ``self._session._x`` in SpdyStream, no
    ``self._conn._x`` (the core's privates) anywhere in the driver."""
    tree = ast.parse(SOURCE.read_text(), str(SOURCE))
    assert _private_cross_access(tree) == ALLOWED


def test_the_scan_sees_cross_access() -> None:
    tree = ast.parse("def f(self, stream):\n    stream._buffered\n    self._session._lost\n")
    assert _private_cross_access(tree) == {("f", "stream._buffered"), ("f", "self._session._lost")}


def test_the_stream_keeps_no_copy_of_protocol_state() -> None:
    """What SpdyStream assigns on itself: I/O state and identity, nothing the record says."""
    tree = ast.parse(SOURCE.read_text(), str(SOURCE))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpdyStream"]
    assigned = {
        target.attr
        for node in ast.walk(cls)
        for target in (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AugAssign | ast.AnnAssign)
            else []
        )
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }
    io_state = {"_chunks", "_offset", "_buffered", "_readable", "_settled", "_closed"}
    io_state |= {"_receiving", "_sending"}
    identity = {"_session", "_record", "stream_id", "local", "headers", "reply_headers"}
    assert assigned == io_state | identity
