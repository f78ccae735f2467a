"""The forwarder raises its own open-files limit: a shell's 1024 would refuse connections."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import resource
from pfcompose.resources import raise_open_file_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
got = raise_open_file_limit()
assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got == hard, (got, hard)
"""


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    subprocess.run([sys.executable, "-c", CODE], check=True, timeout=60)
