"""Process resource limits a forwarder needs.

Every forwarded connection holds two descriptors (local socket plus, for the
``websocket`` transport, its own WebSocket), so a shell's usual soft limit of 1024
open files would refuse connections long before the machine runs out. The hard
limit is what the administrator allows; raising the soft one to it needs no
privilege.
"""

from __future__ import annotations

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
