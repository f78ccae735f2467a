"""Heap tuning of glibc: keep freed data-path buffers for reuse, hand memory back when idle.

Fast path: glibc's ``mallopt`` and ``malloc_trim`` through ctypes. Portable path
(macOS, Windows, musl, or ``PFCOMPOSE_PORTABLE``): nothing — the allocator's
defaults, which cost page faults per chunk on glibc (docs/performance.md) and
are what other allocators already do well enough.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any

from pfcompose.platform.host import PORTABLE

__all__ = ["HAS_MALLOPT", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_buffers",
           "release_free_memory"]  # fmt: skip

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20
"""Allocations below this come from the heap, where freed blocks are reused."""
TRIM_THRESHOLD = 64 << 20
"""Freed memory at the top of the heap is kept up to this much (reused by the next reads)."""


def _libc_function(name: str) -> Any:
    """``name`` from the C library already loaded into us, or None (not glibc, Windows)."""
    if PORTABLE:
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None


HAS_MALLOPT = _libc_function("mallopt") is not None


def keep_freed_buffers(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Stop glibc from returning every large freed buffer to the kernel at once.

    The data path allocates and frees buffers of 256 KiB to 1 MiB for every chunk it
    moves (socket reads, masked WebSocket payloads). With glibc's defaults such a
    buffer is a fresh ``mmap``, or the heap top is trimmed as soon as it is freed,
    so every chunk page-faults its memory in again (measured: 256 MiB uploaded
    through the tunnel cost 1.3 CPU-s/GiB, 0.8 with these thresholds). Freed blocks
    are now reused instead; memory is still handed back when the forwarder is idle
    (:func:`release_free_memory`). False where the C library is not glibc.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = True
    if mmap_threshold:
        ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and ok
    if trim_threshold:
        ok = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and ok
    return ok


def release_free_memory() -> bool:
    """Hand freed heap pages back to the kernel (glibc ``malloc_trim``); False elsewhere.

    Starting up leaves megabytes freed but resident — the compiler's scratch memory
    when modules are compiled from source (no ``.pyc``, e.g. ``PYTHONDONTWRITEBYTECODE``),
    the plan's JSON. A long-running process should not carry that for hours; measured:
    about 1.3 MiB of a ~30 MiB runtime. (``ctypes`` is already loaded by trio.)
    """
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is None:  # not glibc (musl, macOS, Windows) or portable
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
