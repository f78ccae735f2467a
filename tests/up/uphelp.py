"""Helpers for up tests: run the supervisor in the test's trio loop against a sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pfcompose.config import ForwardSpec, load_plan
from pfcompose.kube import ClusterAccess, load_access
from pfcompose.sandbox.server import Sandbox
from pfcompose.up.events import Event, Kind
from pfcompose.up.supervisor import Supervisor

TRANSPORTS = ["auto", "spdy", "spdy-over-websocket", "websocket"]


class Recorder:
    """An event sink tests can wait on, instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = trio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[Event], bool], *, after: int = 0, timeout: float = 15
    ) -> Event:
        """The first event (from index ``after``) matching ``predicate``."""
        with trio.fail_after(timeout):
            seen = after
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                await self._changed.wait()

    async def ready(self, name: str, *, after: int = 0, timeout: float = 15) -> Event:
        return await self.wait_for(
            lambda e: e.forward == name and e.kind is Kind.STATE and e.data.get("state") == "ready",
            after=after,
            timeout=timeout,
        )

    def messages(self, name: str, kind: Kind | None = None) -> list[str]:
        return [
            e.message for e in self.events if e.forward == name and (kind is None or e.kind is kind)
        ]


def sandbox_loader(sb: Sandbox) -> Callable[[ForwardSpec], Any]:
    async def load(spec: ForwardSpec) -> ClusterAccess:
        return await load_access(str(sb.kubeconfig_path), "pfcompose-sandbox")

    return load


@asynccontextmanager
async def running_up(
    sb: Sandbox,
    tmp_path: Path,
    text: str,
    *,
    grace: float = 2.0,
    loader: Callable[[ForwardSpec], Any] | None = None,
) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    """Start a supervisor for the forwards file ``text``; stop it gracefully at the end."""
    path = tmp_path / "forwards.yaml"
    path.write_text(text)
    plan = load_plan([path])
    recorder = Recorder()
    supervisor = Supervisor(
        plan.forwards.values(), loader or sandbox_loader(sb), emit=recorder, grace=grace
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervisor.run, handle_signals=False))
        try:
            yield supervisor, recorder
        finally:
            supervisor.request_stop()


async def echo_round_trip(
    port: int, payload: bytes, host: str = "127.0.0.1", *, half_close: bool = True
) -> bytes:
    """Send ``payload`` and read it back: until EOF after a half-close, or (for the
    ``websocket`` transport, which has no half-close) until as many bytes came back."""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream(host, port)
        async with stream, trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(payload)
                if half_close:
                    await stream.send_eof()

            nursery.start_soon(send)
            chunks: list[bytes] = []
            received = 0
            while half_close or received < len(payload):
                data = await stream.receive_some(262144)
                if not data:
                    break
                chunks.append(data)
                received += len(data)
    return b"".join(chunks)


def local_port(supervisor: Supervisor, name: str, index: int = 0) -> int:
    """The actual local port of the ``index``-th port of forward ``name``."""
    status = next(s for s in supervisor.statuses if s.name == name)
    ports = list(dict.fromkeys(entry.local for entry in status.listening))
    return ports[index]


