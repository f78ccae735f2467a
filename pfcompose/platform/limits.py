"""The open-files limit: every forwarded connection holds one or two descriptors.

A shell's usual soft limit (1024 on Linux, 256 on macOS) refuses connections long
before the machine runs out; raising the soft limit up to the hard one needs no
privilege. macOS reports the hard limit as unlimited but refuses any soft limit
above ``kern.maxfilesperproc``, so there the target is ``min(hard, maxfilesperproc)``
— what Go's runtime does. Where the limit cannot be raised, one line on stderr says
so. Windows has no such limit for sockets (and no ``resource`` module): nothing to do;
``PFCOMPOSE_PORTABLE`` takes that path too.
"""

from __future__ import annotations

import sys
from types import ModuleType

from pfcompose.platform.host import MACOS, PORTABLE

__all__ = ["HAS_RLIMIT", "raise_open_file_limit", "target_limit"]

UNLIMITED_CAP = 1 << 20
"""Target when the hard limit is unlimited and the system names no per-process cap."""


def _resource() -> ModuleType | None:
    if PORTABLE:
        return None
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource


HAS_RLIMIT = _resource() is not None


def target_limit(soft: int, hard: int, unlimited: int, per_process_max: int | None) -> int:
    """The soft limit to ask for: the hard limit, capped by the system's per-process
    maximum (macOS), and a large finite number when both are unlimited."""
    target = hard if hard != unlimited else UNLIMITED_CAP
    if per_process_max is not None and per_process_max > 0:
        target = min(target, per_process_max)
    return max(soft, target) if soft != unlimited else soft


def _maxfilesperproc() -> int | None:
    """``sysctl kern.maxfilesperproc`` (macOS), or None elsewhere / unreadable."""
    if not MACOS:
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))
        if libc.sysctlbyname(b"kern.maxfilesperproc", ctypes.byref(value), ctypes.byref(size),
                             None, ctypes.c_size_t(0)) != 0:  # fmt: skip
            return None
    except (OSError, AttributeError):
        return None
    return value.value


def raise_open_file_limit(*, warn: bool = True) -> int:
    """Raise the soft RLIMIT_NOFILE as far as allowed; returns the soft limit in force.

    When the system refuses, the limit stays and (``warn``) one line on stderr says
    so — connections beyond it will be refused with "Too many open files".
    """
    resource = _resource()
    if resource is None:
        return -1
    soft, hard = (int(v) for v in resource.getrlimit(resource.RLIMIT_NOFILE))
    target = target_limit(soft, hard, int(resource.RLIM_INFINITY), _maxfilesperproc())
    if target == soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        if warn:
            print(f"pfcompose: warning: the open-files limit stays at {soft} (raising it to "
                  f"{target} was refused: {exc}); connections beyond it will be refused",
                  file=sys.stderr, flush=True)  # fmt: skip
        return soft
    return target
