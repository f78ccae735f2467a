"""Process resources: the open-files limit (a shell's 1024 would refuse connections) and
heap memory (reused while data flows, handed back when idle)."""

from __future__ import annotations

import subprocess
import sys
import types

import trio
import trio.testing

from pfcompose.sandbox.pytest_plugin import fast_path_only
from pfcompose.up.supervisor import release_memory_when_idle

CODE = """
import resource
from pfcompose.up.resources import raise_open_file_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
got = raise_open_file_limit()
assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got == hard, (got, hard)
"""


@fast_path_only
def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    subprocess.run([sys.executable, "-c", CODE], check=True, timeout=60)


FAULTS = """
import os, resource, sys
from pfcompose.up.resources import keep_freed_buffers
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
src = os.urandom(1 << 20)

def churn(rounds):  # two 1 MiB reads alive, then freed: what a data path does per chunk
    for _ in range(rounds):
        a, b = bytearray(src), bytearray(src)
        del a, b

churn(5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(50)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], check=True, timeout=60,
                         capture_output=True, text=True)
    return int(out.stdout)


@fast_path_only
def test_freed_buffers_are_reused_not_faulted_in_again() -> None:
    # glibc's defaults return such buffers to the kernel at every free (~256 page
    # faults per MiB); with keep_freed_buffers they are reused
    assert _faults("default") > 50 * 256
    assert _faults("keep") < 50


async def test_memory_is_released_once_traffic_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    status = types.SimpleNamespace(connections_total=0, connections_open=0)
    released: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: release_memory_when_idle(
            lambda: [status], interval=30, release=lambda: released.append(trio.current_time())))
        await trio.sleep(95)
        assert released == []  # no traffic yet: nothing to release
        status.connections_total, status.connections_open = 3, 1
        await trio.sleep(30)
        assert released == []  # a connection is open
        status.connections_open = 0
        await trio.sleep(60)
        assert len(released) == 1  # once, not every interval while idle
        status.connections_total = 4
        await trio.sleep(30)
        assert len(released) == 2
        nursery.cancel_scope.cancel()
