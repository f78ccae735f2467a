"""Process resources a long-running forwarder manages: open files and heap memory.

Every forwarded connection holds two descriptors (local socket plus, for the
``websocket`` transport, its own WebSocket), so a shell's usual soft limit of 1024
open files would refuse connections long before the machine runs out. The hard
limit is what the administrator allows; raising the soft one to it needs no
privilege.
"""

from __future__ import annotations

import ctypes
import gc
import resource


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20
"""Allocations below this come from the heap, where freed blocks are reused."""
TRIM_THRESHOLD = 64 << 20
"""Freed memory at the top of the heap is kept up to this much (reused by the next reads)."""


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
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
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
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded into us
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
