"""``pfcompose config`` and ``pfcompose schema`` through the real command line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pfcompose.cli import main
from pfcompose.commands.config_cmd import schema_text
from pfcompose.config import load_plan

REPO = Path(__file__).resolve().parents[2]
Write = Callable[[str, str], Path]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


SMALL = """\
name: shop
forwards:
  db:
    target: pod/postgres-0
    ports: ["15432:5432"]
  api:
    selector: "tier in (web,edge),app=api"
    context: dev
    namespace: api
    ports: [8080:80, {local: 0, remote: http}]
    addresses: [127.0.0.1]
    profiles: [backend]
"""


def test_json_shape(write: Write) -> None:
    write("forwards.yaml", SMALL)
    result = run("config", "--format", "json", "--profile", "backend")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    reconnect = {"enabled": True, "initial_backoff": 0.2, "max_backoff": 10.0, "hold": 10.0}
    assert json.loads(result.stdout) == {
        "name": "shop",
        "forwards": {
            "db": {
                "target": "pod/postgres-0", "selector": None, "context": None,
                "namespace": None, "ports": [{"local": 15432, "remote": 5432}],
                "addresses": ["localhost"],
                "listen": [
                    {"address": "127.0.0.1", "family": "tcp4", "failure_mode": "all"},
                    {"address": "::1", "family": "tcp6", "failure_mode": "all"},
                ],
                "transport": "auto", "profiles": [], "reconnect": reconnect,
                "keepalive": 5.0, "quiet_connections": False, "healthcheck": None,
            },
            "api": {
                "target": None, "selector": "app=api,tier in (edge,web)", "context": "dev",
                "namespace": "api",
                "ports": [{"local": 8080, "remote": 80}, {"local": 0, "remote": "http"}],
                "addresses": ["127.0.0.1"],
                "listen": [{"address": "127.0.0.1", "family": "tcp4", "failure_mode": "any"}],
                "transport": "auto", "profiles": ["backend"], "reconnect": reconnect,
                "keepalive": 5.0, "quiet_connections": False, "healthcheck": None,
            },
        },
    }  # fmt: skip


def test_yaml_output_loads_back_to_the_same_plan(write: Write) -> None:
    write("forwards.yaml", SMALL)
    result = run("config", "--profile", "backend")
    assert result.exit_code == 0
    write("resolved.yaml", result.stdout)
    again = load_plan([Path("resolved.yaml")], profiles=["backend"], environ={})
    assert again.forwards == load_plan(profiles=["backend"], environ={}).forwards


def test_services_quiet_and_named_forwards(write: Write) -> None:
    write("forwards.yaml", SMALL)
    assert run("config", "--services").stdout == "db\n"
    assert run("config", "--services", "api").stdout == "api\n"
    assert run("config", "--services", env={"PFCOMPOSE_PROFILES": "backend"}).stdout == (
        "db\napi\n"
    )
    quiet = run("config", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_errors_exit_2_one_line_each(write: Write) -> None:
    write("forwards.yaml", "forwards:\n  db:\n    target: svc/db\n    ports: [5432, '1:0']\n")
    write("forwards.override.yaml", "forwards:\n  db:\n    addresses: [my.host]\n")
    result = run("config")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "forwards.yaml:4:19: forwards.db.ports[1]: remote port must be > 0\n"
        "forwards.override.yaml:3:17: forwards.db.addresses[0]: my.host is not a valid IP\n"
    )


def test_warnings_go_to_stderr(write: Write) -> None:
    write("forwards.yaml", "forwards:\n  web: {target: web, ports: [80], addresses: ['0.0.0.0']}\n")
    result = run("config", "-q")
    assert result.exit_code == 0
    assert result.stderr == (
        "warning: forwards.yaml:2:30: forwards.web.ports[0]: local port 80 is below 1024: "
        "binding it needs privileges\n"
        "warning: forwards.yaml:2:47: forwards.web.addresses[0]: 0.0.0.0 is not a loopback "
        "address: the forward is reachable from the network\n"
    )


def test_no_traceback_from_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "forwards.yaml").write_text("forwards:\n  db: [\n", encoding="utf-8")
    process = subprocess.run(
        [sys.executable, "-m", "pfcompose", "config"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr == (
        "forwards.yaml:3:1: while parsing a flow node: expected the node content, "
        "but found '<stream end>'\n"
    )


def test_schema_is_committed_and_current() -> None:
    committed = (REPO / "forwards.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text()
    result = run("schema")
    assert result.stdout == committed
    schema = json.loads(committed)
    assert schema["properties"]["forwards"]["propertyNames"] == {
        "pattern": "^[a-z0-9][a-z0-9_.-]*$"
    }
    assert schema["patternProperties"] == {"^x-": {}}
    assert schema["additionalProperties"] is False


def test_example_file_is_valid_and_names_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    example = REPO / "forwards.example.yaml"
    first_line = example.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=./forwards.schema.json"
    result = run("config", "-f", "forwards.example.yaml", "--profile", "*", "--format", "json",
                 env={"PFCOMPOSE_PROFILES": ""})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    forwards = json.loads(result.stdout)["forwards"]
    assert list(forwards) == ["db", "api", "cache", "web", "jobs", "grafana"]
    assert forwards["db"]["reconnect"]["hold"] == 30.0  # through << and an anchor


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port held on 127.0.0.1 only (listening, so SO_REUSEADDR cannot share it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_check_ports_localhost_survives_through_ipv6(write: Write, occupied: int) -> None:
    write("forwards.yaml", f"forwards:\n  db: {{target: db, ports: ['{occupied}:5432']}}\n")
    result = run("config", "-q", "--check-ports")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_check_ports_explicit_address_fails(write: Write, occupied: int) -> None:
    write("forwards.yaml", f"""\
        forwards:
          db: {{target: db, ports: ['{occupied}:5432', ':80'], addresses: [127.0.0.1]}}
        """)
    result = run("config", "-q", "--check-ports")
    assert result.exit_code == 1
    assert result.stderr == (
        f"forwards.db.ports[0]: Unable to listen on port {occupied}: Listeners failed to create "
        f"with the following errors: [unable to create listener: Error listen tcp4 "
        f"127.0.0.1:{occupied}: bind: address already in use]\n"
    )


def test_check_ports_mode_all_fails_when_every_address_fails(
    write: Write, occupied: int
) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6:
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", occupied))
        v6.listen()
        write("forwards.yaml", f"forwards:\n  db: {{target: db, ports: [{occupied}]}}\n")
        result = run("config", "-q", "--check-ports")
    assert result.exit_code == 1
    assert result.stderr == (
        f"forwards.db.ports[0]: Unable to listen on port {occupied}: Listeners failed to create "
        f"with the following errors: [unable to create listener: Error listen tcp4 "
        f"127.0.0.1:{occupied}: bind: address already in use unable to create listener: "
        f"Error listen tcp6 [::1]:{occupied}: bind: address already in use]\n"
    )
