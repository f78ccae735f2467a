"""WebSocket masking (RFC 6455 §5.3): XOR with a repeating 4-byte key — in C when it is there.

A WebSocket client masks every byte it sends and a server unmasks every byte it
receives, so masking is the per-byte cost of the tunnel's uploads. In pure
Python the best we found is four strided ``bytes.translate`` passes (~640 MB/s,
1.6 CPU-s per GiB), which held uploads through the tunnel to a third of SPDY's
rate (docs/performance.md). The websockets project ships exactly this routine
in C (``websockets.speedups.apply_mask``, SSE2, ~30 GB/s here); we use it.

Importing ``websockets.speedups`` the usual way first runs the package's
``__init__``, which imports ``importlib.metadata``: +1.6 MiB resident and 39
modules in a runtime that holds 28.5 MiB in all. So the extension file is
loaded on its own, as a module of that name, without its package. Without it
(a platform where websockets has no compiled wheel) the pure-Python path runs,
with the same results.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["C_MASK", "mask_in_place", "masked", "python_masked"]

Buffer = bytes | bytearray | memoryview

_XOR_TABLES = tuple(bytes(b ^ k for b in range(256)) for k in range(256))
_SMALL = 64
"""Payloads up to this size take one big-int XOR (~0.5 µs) in the Python path."""


def _xor_small(data: Buffer, key: Buffer) -> bytes:
    n = len(data)
    stream = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def python_masked(data: Buffer, key: Buffer) -> bytes:
    """``data`` XORed with the repeating ``key``, in pure Python (the fallback)."""
    if len(data) <= _SMALL:
        return _xor_small(data, key)
    buf = bytearray(data)
    for lane in range(4):
        part = slice(lane, None, 4)
        buf[part] = buf[part].translate(_XOR_TABLES[key[lane]])
    return bytes(buf)


def _load_apply_mask() -> Callable[[Buffer, Buffer], bytes] | None:
    """websockets' C ``apply_mask``, loaded without the websockets package (see above)."""
    if os.environ.get("PFCOMPOSE_PURE_MASK"):  # to measure or test the fallback
        return None
    try:
        spec = importlib.util.find_spec("websockets")  # finds; does not import
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(directory, "speedups" + suffix)
            if not path.is_file():
                continue
            loader = importlib.machinery.ExtensionFileLoader("websockets.speedups", str(path))
            module_spec = importlib.util.spec_from_file_location(
                "websockets.speedups", path, loader=loader
            )
            if module_spec is None:
                continue
            try:
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                apply_mask: Callable[[Buffer, Buffer], bytes] = module.apply_mask
                if apply_mask(b"Hello", bytes.fromhex("37fa213d")) == bytes.fromhex("7f9f4d5158"):
                    return apply_mask
            except (ImportError, OSError, AttributeError):
                continue
    return None


_apply_mask = _load_apply_mask()
C_MASK = _apply_mask is not None
"""Whether masking runs in C (websockets' ``apply_mask``)."""

masked: Callable[[Buffer, Buffer], bytes] = _apply_mask or python_masked
"""``masked(data, key)``: a new ``bytes``, ``data`` XORed with the repeating 4-byte ``key``."""


def mask_in_place(buf: bytearray, start: int, key: Buffer, end: int | None = None) -> None:
    """XOR ``buf[start:end]`` with the repeating 4-byte ``key`` (an involution: the
    same call unmasks)."""
    stop = len(buf) if end is None else end
    if stop <= start:
        return
    with memoryview(buf) as view:
        result = masked(view[start:stop], key)
    buf[start:stop] = result
