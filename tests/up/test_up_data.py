"""Bytes: many concurrent connections, large verified transfers, half-close."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio
from uphelp import echo_round_trip, local_port, running_up

from pfcompose.sandbox.backends import blob_sha256
from pfcompose.sandbox.server import Sandbox
from pfcompose.up.events import Kind

MiB = 1 << 20


def _file(transport: str, target: str = "pod/echo", port: str = ":5000") -> str:
    return f"""
forwards:
  f:
    target: {target}
    ports: ["{port}"]
    transport: {transport}
    quiet_connections: true
"""


async def test_200_concurrent_connections_of_1_mib_each(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    async with running_up(sandbox, tmp_path, _file("auto")) as (supervisor, events):
        await events.ready("f")
        port = local_port(supervisor, "f")
        payloads = [hashlib.sha256(b"%d" % i).digest() * (MiB // 32) for i in range(200)]
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await echo_round_trip(port, payloads[i])

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
        assert all(results[i] == payloads[i] for i in range(200))
        assert not [e for e in events.events if e.kind is Kind.CONNECTION_ERROR]
        (status,) = supervisor.statuses
        assert status.connections_total == 200 and status.connections_open == 0
        assert status.traffic.bytes_in == status.traffic.bytes_out == 200 * MiB


async def _blob_upload(port: int, size: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"PUT %d\n" % size)
        block = os.urandom(MiB)
        digest = hashlib.sha256()
        sent = 0
        while sent < size:
            chunk = block[: min(MiB, size - sent)]
            await stream.send_all(chunk)
            digest.update(chunk)
            sent += len(chunk)
        answer = b""
        while data := await stream.receive_some(1024):
            answer += data
    assert answer.decode().strip() == digest.hexdigest()
    return digest.hexdigest()


async def _blob_download(port: int, size: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    digest = hashlib.sha256()
    received = 0
    async with stream:
        await stream.send_all(b"GET %d\n" % size)
        while data := await stream.receive_some(1 << 18):
            digest.update(data)
            received += len(data)
    assert received == size
    return digest.hexdigest()


async def test_large_transfer_each_way_sha256_verified(
    sandbox: Sandbox, tmp_path: Path, transport: str
) -> None:
    size = 256 * MiB
    async with running_up(sandbox, tmp_path, _file(transport, "pod/blob", ":9000")) as (
        supervisor,
        events,
    ):
        await events.ready("f")
        port = local_port(supervisor, "f")
        with trio.fail_after(120):
            await _blob_upload(port, size)
            assert await _blob_download(port, size) == blob_sha256(size)


async def test_half_close_keeps_receiving(sandbox: Sandbox, tmp_path: Path) -> None:
    """The client shuts its write side and still receives everything the pod sends."""
    async with running_up(sandbox, tmp_path, _file("spdy")) as (supervisor, events):
        await events.ready("f")
        port = local_port(supervisor, "f")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            payload = os.urandom(3 * MiB)
            await stream.send_all(payload)
            await stream.send_eof()  # echo sees EOF only after all of it
            got = bytearray()
            with trio.fail_after(30):
                while data := await stream.receive_some(1 << 18):
                    got += data
        assert bytes(got) == payload
