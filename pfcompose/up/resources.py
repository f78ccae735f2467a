"""Process resources a long-running forwarder manages: open files and heap memory.

The mechanisms are platform-specific and live in :mod:`pfcompose.platform`
(``limits``: RLIMIT_NOFILE, ``memory``: glibc's allocator); this module keeps the
names the rest of the code imports. Nothing here imports ``resource`` (Windows has
none), so importing it never fails.
"""

from __future__ import annotations

from pfcompose.platform.limits import raise_open_file_limit
from pfcompose.platform.memory import (
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    keep_freed_buffers,
    release_free_memory,
)

__all__ = [
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "keep_freed_buffers",
    "raise_open_file_limit",
    "release_free_memory",
]
