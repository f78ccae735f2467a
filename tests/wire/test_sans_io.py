"""The protocol cores are sans-IO: importing one loads no trio and no I/O driver.

Each core is imported in a fresh interpreter (this process has trio loaded
already), which then reports what it loaded. A core may bring in other cores,
the libraries it parses with (h11, wsproto's frame codec) and the small
utilities; any trio module, or any other ``pfcompose`` module, fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORES = (
    "pfcompose.wire.errors",
    "pfcompose.wire.spdy",
    "pfcompose.wire.spdy_dict",
    "pfcompose.wire.proxyenv",
    "pfcompose.wire.masking",
    "pfcompose.wire.ws_frames",
    "pfcompose.wire.channel_codec",
    "pfcompose.wire.httpmsg",
    "pfcompose.wire.handshake",
)
"""Every sans-IO module of ``pfcompose/wire``."""

ALLOWED = {"pfcompose", "pfcompose.wire", "pfcompose._util", "pfcompose._util.gotext", *CORES}
"""The ``pfcompose`` modules a core may load: packages, cores, pure text helpers."""

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("module", CORES)
def test_core_imports_no_trio_and_no_driver(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert module in loaded
    trio_modules = sorted(m for m in loaded if m == "trio" or m.startswith("trio."))
    assert not trio_modules, f"{module} loads {trio_modules[:5]}"
    ours = {m for m in loaded if m == "pfcompose" or m.startswith("pfcompose.")}
    assert ours <= ALLOWED, f"{module} loads driver modules {sorted(ours - ALLOWED)}"


def test_the_probe_sees_a_driver_loading_trio() -> None:
    """The check can fail: the SPDY session driver does load trio."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module="pfcompose.wire.session")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "trio" in loaded
    assert "pfcompose.wire.session" in loaded
