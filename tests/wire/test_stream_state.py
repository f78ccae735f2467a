"""One owner of each stream's state: the core's StreamRecord (the driver's side follows)."""

from __future__ import annotations

import pytest

from pfcompose.wire.spdy import (
    RstStatus,
    SpdyConnection,
    StreamOpened,
    StreamRecord,
    StreamState,
)

DATA = {"streamType": "data", "port": "80", "requestID": "0"}


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
