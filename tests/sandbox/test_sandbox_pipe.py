"""The kubelet's in-process connection to pod processes behaves as TCP does where it shows."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from pfcompose.sandbox.pipe import pipe_pair


async def test_data_both_ways_then_fin() -> None:
    a, b = pipe_pair()
    await a.send_all(b"hello ")
    await a.send_all(bytearray(b"world"))
    await a.send_eof()
    assert await b.receive_some() == b"hello world"  # what is buffered comes joined
    assert await b.receive_some() == b""  # FIN
    assert await b.receive_some() == b""
    await b.send_all(b"still open the other way")
    assert await a.receive_some(5) == b"still"
    assert await a.receive_some() == b" open the other way"
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"after eof")


async def test_max_bytes_splits_across_chunks() -> None:
    a, b = pipe_pair()
    for piece in (b"abc", memoryview(b"defgh"), b"ij"):
        await a.send_all(piece)
    assert [await b.receive_some(4) for _ in range(3)] == [b"abcd", b"efgh", b"ij"]


async def test_a_reused_buffer_is_copied_at_send() -> None:
    a, b = pipe_pair()
    buf = bytearray(b"first")
    await a.send_all(buf)
    buf[:] = b"later"
    assert await b.receive_some() == b"first"


async def test_abort_is_a_reset_for_the_peer() -> None:
    a, b = pipe_pair()
    await a.send_all(b"unread")
    b.abort()
    with pytest.raises(trio.BrokenResourceError) as info:
        await a.receive_some()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert info.value.__cause__.errno == errno.ECONNRESET
    with pytest.raises(trio.BrokenResourceError):
        await a.send_all(b"more")
    with pytest.raises(trio.ClosedResourceError):
        await b.receive_some()


async def test_close_with_unread_input_resets_clean_close_is_fin() -> None:
    a, b = pipe_pair()
    await a.send_all(b"never read")
    await b.aclose()  # Linux: close() with unread data sends RST
    with pytest.raises(trio.BrokenResourceError):
        await a.receive_some()

    a, b = pipe_pair()
    await b.aclose()
    assert await a.receive_some() == b""  # FIN
    with pytest.raises(trio.BrokenResourceError):  # EPIPE: nobody reads any more
        await a.send_all(b"x")


@pytest.mark.parametrize("end", ["data", "fin", "reset"])
async def test_a_blocked_receiver_wakes_on_data_fin_and_reset(end: str) -> None:
    a, b = pipe_pair()
    got: list[object] = []

    async def read() -> None:
        try:
            got.append(await b.receive_some())
        except trio.BrokenResourceError as exc:
            got.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        if end == "data":
            await a.send_all(b"x")
        elif end == "fin":
            await a.send_eof()
        else:
            a.abort()
    assert got == [{"data": b"x", "fin": b"", "reset": trio.BrokenResourceError}[end]]


async def test_sender_waits_beyond_the_limit_until_read() -> None:
    a, b = pipe_pair(limit=10)
    await a.send_all(b"0123456789")  # at the limit: returns
    sent = trio.Event()

    async def send_more() -> None:
        await a.send_all(b"abc")
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_more)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()  # 13 bytes unread > 10: the writer waits (TCP's window)
        assert await b.receive_some(5) == b"01234"
        await sent.wait()
    assert await b.receive_some() == b"56789abc"


async def test_a_waiting_sender_learns_of_a_reset() -> None:
    a, b = pipe_pair(limit=4)
    with pytest.RaisesGroup(trio.BrokenResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_all, b"too much for the window")
            await trio.testing.wait_all_tasks_blocked()
            b.abort()
