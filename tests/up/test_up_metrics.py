"""The metrics endpoint: Prometheus' own parser reads it; bytes match what was sent."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import trio
from uphelp import Recorder, echo_round_trip, local_port, running_up

from pfcompose.config import load_plan
from pfcompose.config.problems import ConfigErrors
from pfcompose.sandbox.server import Sandbox
from pfcompose.up.connstats import project_snapshot
from pfcompose.up.events import Kind
from pfcompose.up.metrics import CONTENT_TYPE, render
from pfcompose.up.observe import run_metrics
from pfcompose.up.supervisor import Supervisor

prometheus_parser = pytest.importorskip("prometheus_client.parser")

FILE = """
forwards:
  echo:
    target: pod/echo
    ports: [":5000"]
    transport: spdy
  ghost:
    target: pod/nothing-here
    ports: [":5000"]
    reconnect: {initial_backoff: 5s, max_backoff: 5s}
"""


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP GET with h11 (no client library needed)."""
    import h11

    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.rpartition(":")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(address, int(port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="GET", target="/" + rest, headers=[("Host", host)])
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, headers, body = 0, {}, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, headers, body


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset({"project": "metricsproj", **labels}.items()))]


async def _serve(nursery: trio.Nursery, supervisor: Supervisor, events: Recorder) -> str:
    def snapshot() -> dict[str, Any]:
        specs = {f.spec.name: f.spec for f in supervisor.forwards}
        return project_snapshot("metricsproj", supervisor.statuses, specs)

    url = await nursery.start(functools.partial(run_metrics, "127.0.0.1:0", snapshot, events))
    assert isinstance(url, str) and url.endswith("/metrics")
    return url


async def test_scrape_before_and_after_known_traffic(sandbox: Sandbox, tmp_path: Path) -> None:
    async with (
        running_up(sandbox, tmp_path, FILE) as (supervisor, events),
        trio.open_nursery() as nursery,
    ):
        url = await _serve(nursery, supervisor, events)
        assert any(e.message == f"Serving metrics on {url}" for e in events.events)
        await events.ready("echo")
        port = local_port(supervisor, "echo")
        status, headers, body = await _get(url)
        assert status == 200 and headers["content-type"] == CONTENT_TYPE
        before = _samples(body.decode())
        assert _value(before, "pfcompose_forward_up", forward="echo") == 1
        assert _value(before, "pfcompose_forward_ready", forward="echo") == 1
        assert _value(before, "pfcompose_forward_ready", forward="ghost") == 0
        assert _value(before, "pfcompose_forward_up", forward="ghost") == 1  # listening, waiting
        # No health check declared: no healthy series at all.
        assert not [key for key in before if key[0] == "pfcompose_forward_healthy"]

        sizes = [1, 1000, 65536 * 3 + 7]
        for size in sizes:
            payload = bytes(size)
            assert await echo_round_trip(port, payload) == payload
        with trio.fail_after(10):  # the last connection's end is counted as it closes
            while sum(supervisor.statuses[0].traffic.results.values()) < len(sizes):
                await events.wait_for(lambda e: e.kind is Kind.CONNECTION_CLOSED)
        after = _samples((await _get(url))[2].decode())

        for direction in ("in", "out"):
            name = "pfcompose_forward_bytes_total"
            delta = _value(after, name, forward="echo", direction=direction) - _value(
                before, name, forward="echo", direction=direction
            )
            assert delta == sum(sizes)
        ok = "pfcompose_forward_connections_total"
        assert _value(after, ok, forward="echo", result="ok") - _value(
            before, ok, forward="echo", result="ok"
        ) == len(sizes)
        count = _value(after, "pfcompose_forward_connect_latency_seconds_count", forward="echo")
        inf = _value(
            after, "pfcompose_forward_connect_latency_seconds_bucket", forward="echo", le="+Inf"
        )
        assert count == inf == len(sizes)
        assert _value(after, "pfcompose_forward_session_seconds", forward="echo") > 0
        assert _value(after, "pfcompose_forward_reconnects_total", forward="ghost") >= 1
        assert (await _get(url.removesuffix("metrics") + "nope"))[0] == 404
        nursery.cancel_scope.cancel()


def test_names_follow_conventions() -> None:
    record = {
        "name": 'we"ird', "state": "ready", "listening": [{}], "healthy": False,
        "connections_open": 2, "results": {"ok": 3, "refused": 1, "reset": 0, "error": 0},
        "bytes_in": 10, "bytes_out": 20, "reconnects": 4, "session_seconds": 1.5,
        "latency": {"buckets": [0.01, 0.1], "counts": [1, 2, 1], "sum": 0.5},
    }  # fmt: skip
    text = render({"project": "p", "forwards": [record]})
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}
    assert families["pfcompose_forward_bytes"].type == "counter"
    assert families["pfcompose_forward_connect_latency_seconds"].type == "histogram"
    samples = _samples(text)
    labels = {"project": "p", "forward": 'we"ird'}
    assert samples[("pfcompose_forward_healthy", frozenset(labels.items()))] == 0
    bucket = "pfcompose_forward_connect_latency_seconds_bucket"
    cumulative = [samples[(bucket, frozenset({**labels, "le": le}.items()))]
                  for le in ("0.01", "0.1", "+Inf")]  # fmt: skip
    assert cumulative == [1, 3, 4]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forwards.yaml"
    path.write_text(text)
    return path


def test_metrics_key_is_validated(tmp_path: Path) -> None:
    base = 'forwards:\n  a: {target: pod/x, ports: ["8080"]}\n'
    plan = load_plan([_write(tmp_path, "metrics:\n  listen: 9464\n" + base)])
    assert plan.metrics == "127.0.0.1:9464"
    plan = load_plan([_write(tmp_path, "metrics:\n  listen: '[::1]:9000'\n" + base)])
    assert plan.metrics == "[::1]:9000"
    plan = load_plan([_write(tmp_path, "metrics:\n  listen: 0.0.0.0:9464\n" + base)])
    assert [str(w) for w in plan.warnings] == [
        f"{tmp_path / 'forwards.yaml'}:2:11: metrics.listen: 0.0.0.0:9464 is not a loopback "
        "address: the metrics are reachable from the network"
    ]
    for listen, message in [
        ("nohost:80", "'nohost:80': the host must be an IP address or localhost"),
        ("1.2.3.4:70000", "'1.2.3.4:70000': the port must be a number from 0 to 65535"),
        ("true", "must be HOST:PORT, :PORT or a port number"),
    ]:
        with pytest.raises(ConfigErrors) as info:
            load_plan([_write(tmp_path, f"metrics:\n  listen: {listen}\n" + base)])
        assert str(info.value) == f"{tmp_path / 'forwards.yaml'}:2:11: metrics.listen: {message}"
    with pytest.raises(ConfigErrors) as info:
        load_plan([_write(tmp_path, "metrics:\n  port: 1\n" + base)])
    where = f"{tmp_path / 'forwards.yaml'}:2:3"
    assert str(info.value).startswith(f"{where}: metrics.port: unknown key")


def test_metrics_option_is_loopback_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    file = _write(tmp_path, 'forwards:\n  a: {target: pod/x, ports: ["8080"]}\n')
    for flag, message in [
        ("0.0.0.0:9464", "error: --metrics: 0.0.0.0:9464 is not a loopback address; to expose "
                         "metrics to the network, set metrics.listen in the file"),
        ("x:1", "error: --metrics: 'x:1': the host must be an IP address or localhost"),
    ]:  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "pfcompose", "up", "-f", str(file), "--metrics", flag],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stderr, done.stdout) == (2, message + "\n", "")


ISSUE_16_METRICS = {  # metric (as exposed) → type, label names besides project
    "pfcompose_forward_up": ("gauge", {"forward"}),
    "pfcompose_forward_ready": ("gauge", {"forward"}),
    "pfcompose_forward_healthy": ("gauge", {"forward"}),
    "pfcompose_forward_connections_open": ("gauge", {"forward"}),
    "pfcompose_forward_connections_total": ("counter", {"forward", "result"}),
    "pfcompose_forward_bytes_total": ("counter", {"forward", "direction"}),
    "pfcompose_forward_reconnects_total": ("counter", {"forward"}),
    "pfcompose_forward_session_seconds": ("gauge", {"forward"}),
    "pfcompose_forward_connect_latency_seconds": ("histogram", {"forward", "le"}),
}
_SUFFIXES = {"counter": {""}, "gauge": {""}, "histogram": {"_bucket", "_sum", "_count"}}


def test_every_metric_the_issue_names_exists_with_prometheus_conventions() -> None:
    # on the text itself: prometheus_client's parser renames a counter's samples to
    # NAME_total whatever was written, so only the raw lines show a missing _total
    import re

    record = {
        "name": "a", "state": "ready", "listening": [{}], "healthy": True,
        "connections_open": 0, "results": {"ok": 1, "refused": 2, "reset": 3, "error": 4},
        "bytes_in": 5, "bytes_out": 6, "reconnects": 0, "session_seconds": 2.0,
        "latency": {"buckets": [0.001, 0.01], "counts": [1, 0, 0], "sum": 0.0005},
    }  # fmt: skip
    text = render({"project": "p", "forwards": [record]})
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    samples = re.findall(r"^([a-z_:][a-z0-9_:]*)\{([^}]*)\} \S+$", text, re.M)
    assert len(samples) == len([line for line in text.splitlines() if not line.startswith("#")])
    found: dict[str, tuple[str, set[str]]] = {}
    for name, kind in types.items():
        assert re.fullmatch(r"pfcompose_[a-z][a-z0-9_]*", name) and name in helps
        assert name.endswith("_total") == (kind == "counter"), name
        mine = [(n, labels) for n, labels in samples
                if n.startswith(name) and n.removeprefix(name) in _SUFFIXES[kind]]  # fmt: skip
        assert {n.removeprefix(name) for n, _ in mine} == _SUFFIXES[kind], name
        keys = {k for _, labels in mine for k in re.findall(r'(\w+)="', labels)}
        found[name] = (kind, keys - {"project"})
    assert found == ISSUE_16_METRICS
    owned = sum(1 for n, _ in samples for name, kind in types.items()
                if n.startswith(name) and n.removeprefix(name) in _SUFFIXES[kind])  # fmt: skip
    assert owned == len(samples)  # every sample belongs to exactly one declared family
    parsed = {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}
    results = {s.labels["result"]: s.value for s in parsed["pfcompose_forward_connections"].samples}
    assert results == {"ok": 1, "refused": 2, "reset": 3, "error": 4}
    directions = {s.labels["direction"]: s.value for s in parsed["pfcompose_forward_bytes"].samples}
    assert directions == {"in": 5, "out": 6}
