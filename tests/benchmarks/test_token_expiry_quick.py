"""``benchmarks.token_expiry`` in a few seconds: tokens that live 1 s, zero failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_token_expiry_has_no_failed_connection() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.token_expiry", "--duration", "3", "--ttl", "1",
         "--interval", "0.1", "--bulk", "256KiB", "--transports", "websocket,spdy", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    for name, forward in result["forwards"].items():
        assert forward["connections_failed"] == 0, (name, forward["failures"])
        assert forward["connections_ok"] >= 20
        assert forward["bulk_transfers"] >= 1
    # 1-second tokens over 3 seconds: the plugin ran again while connections went on
    assert result["plugin_runs_during_load"] >= 2
    assert result["pfcompose_events"].get("connection_error", 0) == 0
