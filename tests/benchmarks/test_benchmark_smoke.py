"""The benchmark keeps working: ``python -m benchmarks`` at a few MiB and a few rounds.

Timing is never asserted — only that every subject ran, every byte verified, the
JSON holds the fields docs/performance.md describes, and kubectl's absence is a
clean skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--size", "2MiB", "--rounds", "5", "--conc", "4,8", "--conc-bytes", "64KiB",
         "--repeat", "1", "--time-limit", "30", "--op-timeout", "20"]
METRICS = ["upload_mbps", "download_mbps", "latency_median_ms", "latency_p99_ms",
           "conc_small_s", "conc_large_s"]


def run_benchmark(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                      dict[str, Any]]:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *SMALL, *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_every_subject_with_kubectl(tmp_path: Path) -> None:
    proc, report = run_benchmark(tmp_path, "--scale", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    subjects = ["direct", "kubectl-spdy", "kubectl-ws", "pfcompose-spdy",
                "pfcompose-spdy-over-websocket", "pfcompose-auto", "pfcompose-websocket"]
    assert [r["subject"] for r in report["runs"]] == subjects
    for run in report["runs"]:
        assert "errors" not in run, run
        assert run["conc_large"]["ok"] == 8 and run["conc_large"]["failed"] == 0
        for metric in METRICS:
            assert report["medians"][run["subject"]][metric] > 0
        if run["subject"] != "direct":
            assert run["rss_peak_mib"] >= run["rss_idle_mib"] > 0
            assert run["cpu_s_per_gib"] >= 0
    assert set(report["ratios"]) >= {"spdy / kubectl-spdy", "auto / kubectl-ws", "spdy / direct"}
    scale = report["scale"][0]
    assert scale["forwards"] == 3 and scale["pfcompose_echo_ok"] is True
    assert scale["pfcompose_rss_mib"] > 0 and scale["kubectl_one_rss_mib"] > 0
    assert "| spdy / kubectl-spdy |" in proc.stdout


def test_without_kubectl_skips_its_subjects(tmp_path: Path) -> None:
    proc, report = run_benchmark(tmp_path, "--kubectl", str(tmp_path / "no-kubectl"),
                                 "--subjects", "direct,kubectl-spdy,kubectl-ws,pfcompose-spdy",
                                 "--scale", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["subject"] for r in report["runs"]] == ["direct", "pfcompose-spdy"]
    assert set(report["skipped"]) == {"kubectl-spdy", "kubectl-ws"}
    assert report["kubectl"] is None
    assert list(report["ratios"]) == ["spdy / direct"]
    assert "kubectl_one_rss_mib" not in report["scale"][0]
    assert "kubectl subjects skipped" in proc.stdout


def test_unknown_subject_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--subjects", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown subjects ['nope']")
