"""What this host is: the portable switch and the OS, read once at import.

A leaf (``os`` and ``sys`` only): every module of :mod:`pfcompose.platform` imports
its flags from here, not from the package, so the package's ``__init__`` and its
modules do not import each other.
"""

from __future__ import annotations

import os
import sys

__all__ = ["MACOS", "O_CLOEXEC", "PORTABLE", "PORTABLE_VARIABLE", "WINDOWS", "unsupported"]

PORTABLE_VARIABLE = "PFCOMPOSE_PORTABLE"
PORTABLE = os.environ.get(PORTABLE_VARIABLE, "") not in ("", "0")
"""Every mechanism takes its portable path (``PFCOMPOSE_PORTABLE=1``)."""
WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
"""``os.open`` flag; 0 on Windows, where new handles are not inherited anyway (PEP 446)."""


def unsupported(what: str) -> str:
    """The one line for a feature this platform does not have (never a traceback)."""
    return f"{what} is not supported on {sys.platform}"
