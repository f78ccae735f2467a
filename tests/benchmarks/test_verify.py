"""The benchmark's throughput checks catch a wrong, missing or extra byte, in both modes.

A fake blob pod (a loopback trio server) serves chosen bytes; the real sandbox's
``VERIFY`` is checked against the real client once, end to end.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from pfcompose.sandbox.backends import blob_bytes
from pfcompose.sandbox.server import run_sandbox
from pfcompose.sandbox.state import State

N = 3 * (1 << 20) + 4321  # crosses the 1 MiB period and many reads


def _load_clients():  # type: ignore[no-untyped-def]
    """benchmarks/clients.py by path: this test package is itself named ``benchmarks``."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "clients.py"
    spec = importlib.util.spec_from_file_location("bench_clients_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


clients = _load_clients()


@asynccontextmanager
async def fake_pod(serve: Callable[[trio.SocketStream], Awaitable[None]]
                   ) -> AsyncIterator[int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield port
        nursery.cancel_scope.cancel()


async def read_line(stream: trio.SocketStream) -> bytes:
    """The command line alone (a byte at a time: nothing after it is consumed)."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        line += await stream.receive_some(1)
    return line


def serving(payload: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def serve(stream: trio.SocketStream) -> None:
        assert await read_line(stream) == b"GET %d\n" % N
        await stream.send_all(payload)

    return serve


def corrupt(at: int) -> bytes:
    data = bytearray(blob_bytes(N))
    data[at] ^= 0x20
    return bytes(data)


async def download(port: int, verify: clients.Verify) -> float:
    fn = functools.partial(clients.download, port, N, 20.0, verify)
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


@pytest.mark.parametrize("verify", clients.VERIFY_MODES)
async def test_download_accepts_the_pattern(verify: clients.Verify) -> None:
    async with fake_pod(serving(blob_bytes(N))) as port:
        assert await download(port, verify) > 0


@pytest.mark.parametrize(("payload", "message"), [
    pytest.param(corrupt(0), "wrong byte at offset 0", id="first"),
    pytest.param(corrupt((1 << 20) + 5), f"wrong byte at offset {(1 << 20) + 5}", id="second-mib"),
    pytest.param(corrupt(N - 1), f"wrong byte at offset {N - 1}", id="last"),
    pytest.param(blob_bytes(N - 1), f"got {N - 1}", id="truncated"),
    pytest.param(blob_bytes(N + 1), f"got more than {N}", id="extra"),
    pytest.param(blob_bytes(N + 1)[1:], "wrong byte at offset 0", id="shifted"),
])
async def test_download_pattern_check_catches(payload: bytes, message: str) -> None:
    async with fake_pod(serving(payload)) as port:
        with pytest.raises(clients.BenchError, match=f"download of {N} bytes: {message}$"):
            await download(port, "pattern")


@pytest.mark.parametrize("payload", [corrupt(N // 2), blob_bytes(N - 1)],
                         ids=["corrupt", "truncated"])
async def test_download_sha256_check_catches(payload: bytes) -> None:
    async with fake_pod(serving(payload)) as port:
        with pytest.raises(clients.BenchError, match=f"download of {N} bytes: "):
            await download(port, "sha256")


async def test_upload_fails_unless_the_pod_confirms() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        assert await read_line(stream) == b"VERIFY 1000\n"
        got = 0
        while got < 1000:
            got += len(await stream.receive_some(1000 - got))
        await stream.send_all(b"mismatch at 17\n")

    async with fake_pod(answer) as port:
        fn = functools.partial(clients.upload, port, 1000, 20.0, "pattern")
        with pytest.raises(clients.BenchError,
                           match="pod answered 'mismatch at 17', expected 'ok 1000'"):
            await trio.to_thread.run_sync(fn)


@pytest.mark.parametrize("verify", clients.VERIFY_MODES)
async def test_upload_to_the_sandbox_blob_pod(verify: clients.Verify) -> None:
    state = State.from_dict({"pods": [{"name": "b", "ports": [
        {"containerPort": 9000, "serve": "blob"}]}]})
    async with run_sandbox(state) as sb:
        address = sb.backends.address(sb.pod("b"), 9000)
        assert address is not None
        fn = functools.partial(clients.upload, address[1], N, 20.0, verify)
        with trio.fail_after(30):
            assert await trio.to_thread.run_sync(fn) > 0
