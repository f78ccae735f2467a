"""Run pfcompose as on a system without Linux's extras (tests/platform's prelude).

Removes, before any pfcompose module is imported: ``os.writev``,
``os.memfd_create``, the ``fcntl`` and ``resource`` modules, glibc's ``mallopt`` and
``malloc_trim`` from ctypes, ``socket.TCP_NOTSENT_LOWAT``, ``socket.AF_UNIX``
(``socketpair`` becomes loopback TCP, as on Windows), ``select.poll``, and what
Windows lacks of POSIX job control (``signal.SIGHUP``, ``os.killpg``,
``os.tcgetpgrp``, the ``termios`` and ``tty`` modules). Then
imports every module of the package (none may fail) and runs
``python -m pfcompose ARGS`` — or, with ``--imports-only``, prints what the platform
seam reports and exits. PFCOMPOSE_PORTABLE must not be set: detection is tested.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import pkgutil
import runpy
import select
import signal
import socket
import sys

import trio  # noqa: F401 - imported first: trio itself is portable, we test our code

for name in ("writev", "memfd_create", "killpg", "tcgetpgrp"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("TCP_NOTSENT_LOWAT", "AF_UNIX"):
    if hasattr(socket, name):
        delattr(socket, name)


def _loopback_socketpair(
    family: int | None = None, type: int = socket.SOCK_STREAM, proto: int = 0
) -> tuple[socket.socket, socket.socket]:
    """What socketpair is where there is no AF_UNIX (CPython's Windows fallback)."""
    with socket.socket(socket.AF_INET, type, proto) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


socket.socketpair = _loopback_socketpair  # the stdlib's default family was AF_UNIX
if hasattr(signal, "SIGHUP"):
    delattr(signal, "SIGHUP")
sys.modules["termios"] = None  # type: ignore[assignment]
sys.modules["tty"] = None  # type: ignore[assignment]
if hasattr(select, "poll"):
    delattr(select, "poll")
sys.modules["fcntl"] = None  # type: ignore[assignment]  # "import fcntl" raises ImportError
sys.modules["resource"] = None  # type: ignore[assignment]


class _NoGlibc(ctypes.CDLL):
    def __getattr__(self, name: str) -> object:
        if name in ("mallopt", "malloc_trim"):
            raise AttributeError(name)
        return super().__getattr__(name)


ctypes.CDLL = _NoGlibc  # type: ignore[misc]

assert "PFCOMPOSE_PORTABLE" not in os.environ
import pfcompose  # noqa: E402

failed = []
for info in pkgutil.walk_packages(pfcompose.__path__, "pfcompose."):
    if info.name == "pfcompose.__main__":
        continue
    try:
        importlib.import_module(info.name)
    except (ImportError, AttributeError) as exc:  # a missing module or name
        failed.append(f"{info.name}: {exc!r}")
if failed:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(3)

if sys.argv[1:] == ["--imports-only"]:
    from pfcompose.platform import capabilities

    print(json.dumps(capabilities()))
    sys.exit(0)
sys.argv = ["pfcompose", *sys.argv[1:]]
runpy.run_module("pfcompose", run_name="__main__")
