"""`pfcompose sandbox --proxy/--gateway/--emulate` as a process, judged by kubectl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pfcompose.sandbox.pytest_plugin import KUBECTL, requires_kubectl, start_sandbox_process


def test_proxy_url_is_printed_masked_and_written_whole(tmp_path: Path) -> None:
    with start_sandbox_process(None, tmp_path, extra_args=[
            "--proxy", "socks5", "--proxy-auth", "alice:pa:ss"]) as sb:
        text = "\n".join(sb.output)
        assert "pa:ss" not in text and "pa%3Ass" not in text
        line = next(x for x in sb.output if x.startswith("Sandbox socks5 proxy listening on"))
        assert "socks5://alice:xxxxx@127.0.0.1:" in line
        config = yaml.safe_load(sb.kubeconfig_path.read_text())
        url = config["clusters"][0]["cluster"]["proxy-url"]
        assert url.startswith("socks5://alice:pa%3Ass@127.0.0.1:")
        state = sb.admin("GET", "/_sandbox/proxy")
        assert state["kind"] == "socks5" and state["tunnels"] == 0
        assert sb.admin("POST", "/_sandbox/proxy", {"fault": "close", "times": 2})["times"] == 2


@pytest.mark.kubectl
@requires_kubectl
def test_kubectl_get_goes_through_the_socks_proxy(tmp_path: Path) -> None:
    with start_sandbox_process(None, tmp_path, extra_args=[
            "--proxy", "socks5", "--proxy-auth", "alice:pw"]) as sb:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(sb.kubeconfig_path), "--cache-dir",
             str(tmp_path / "cache"), "get", "pods", "-o", "name"],
            capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert b"pod/echo" in result.stdout
        assert sb.admin("GET", "/_sandbox/proxy")["tunnels"] >= 1


@pytest.mark.parametrize(("args", "message"), [
    (["--proxy-auth", "a:b"], "--proxy-auth needs --proxy"),
    (["--proxy", "http", "--proxy-auth", "nocolon"], "USER:PASSWORD"),
    (["--gateway", "idle=0"], "--gateway: gateway must be"),
    (["--gateway", "spdy-only"], "--gateway: gateway must be"),
    (["--emulate", "1.30"], "Invalid value for '--emulate'"),
])
def test_bad_flags_are_one_line_usage_errors(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pfcompose", "sandbox", *args],
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr
