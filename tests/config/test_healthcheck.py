"""``healthcheck:``: each mistake is one FILE:LINE:COL line; good checks become HealthSpecs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfcompose.config import ConfigErrors, load_plan
from pfcompose.config.healthspec import HealthSpec, health_from_json, health_to_json
from pfcompose.config.model import json_schema

HEAD = "forwards:\n  db:\n    target: a\n    ports: ['5432']\n"

BAD = [
    pytest.param(
        HEAD + "    healthcheck: {path: /x}\n",
        ["f.yaml:5:18: forwards.db.healthcheck: required key is missing: type (tcp, http or exec)"],
        id="no_type",
    ),
    pytest.param(
        HEAD + "    healthcheck: {type: udp}\n",
        ["f.yaml:5:25: forwards.db.healthcheck.type: input should be 'tcp', 'http' or 'exec'"],
        id="bad_type",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: tcp\n      pth: /x\n",
        ['f.yaml:7:7: forwards.db.healthcheck.pth: unknown key, did you mean "path"?'],
        id="unknown_key",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: tcp\n      path: /x\n",
        ["f.yaml:7:13: forwards.db.healthcheck.path: path applies to http checks only"],
        id="path_on_tcp",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: exec\n",
        ["f.yaml:6:7: forwards.db.healthcheck: an exec check needs a command"],
        id="exec_without_command",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: http\n      command: ['true']\n",
        ["f.yaml:7:16: forwards.db.healthcheck.command: command applies to exec checks only"],
        id="command_on_http",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: http\n      expect: [200, '500-400']\n",
        ["f.yaml:7:15: forwards.db.healthcheck.expect: invalid status '500-400': statuses are "
         "100-599, low to high"],
        id="expect_range",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: http\n      path: healthz\n",
        ["f.yaml:7:13: forwards.db.healthcheck.path: the path must start with \"/\", "
         "not 'healthz'"],
        id="relative_path",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: tcp\n      port: 80\n",
        ["f.yaml:7:13: forwards.db.healthcheck.port: 80 is not one of the forward's remote "
         "ports (5432)"],
        id="port_not_forwarded",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: tcp\n      retries: 0\n      interval: soon\n",
        ["f.yaml:7:16: forwards.db.healthcheck.retries: input should be greater than or equal to 1",
         "f.yaml:8:17: forwards.db.healthcheck.interval: invalid duration 'soon': use seconds "
         '(a number >= 0) or a string such as "250ms", "10s", "2m"'],
        id="timings",
    ),
    pytest.param(
        HEAD + "    healthcheck:\n      type: tcp\n      timeout: 0s\n",
        ["f.yaml:7:16: forwards.db.healthcheck.timeout: timeout must be more than 0"],
        id="zero_timeout",
    ),
    pytest.param(
        "defaults:\n  healthcheck: {type: http, expect: 99}\n" + HEAD,
        ["f.yaml:2:37: defaults.healthcheck.expect: invalid status 99: statuses are 100-599, "
         "low to high"],
        id="bad_default",
    ),
    pytest.param(
        "forwards:\n  db:\n    targt: a\n    healthcheck: {type: tcp}\n",
        ['f.yaml:3:5: forwards.db.targt: unknown key, did you mean "target"?',
         "f.yaml:2:3: forwards.db: a forward needs a target or a selector",
         "f.yaml:2:3: forwards.db.ports: you must specify at least 1 port"],
        id="unknown_key_before_missing",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_healthchecks(text: str, expected: list[str], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    Path("f.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_plan([Path("f.yaml")], environ={})
    assert [str(problem) for problem in info.value.problems] == expected


def _load(text: str, tmp_path: Path) -> dict[str, HealthSpec | None]:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    return {name: spec.health for name, spec in load_plan([path], environ={}).forwards.items()}


def test_defaults_merge_key_by_key_and_disable(tmp_path: Path) -> None:
    text = (
        "defaults:\n  healthcheck: {type: http, interval: 1s, retries: 5}\n"
        "forwards:\n"
        "  api: {target: a, ports: ['8080:http'], healthcheck: {path: /healthz, expect: 204}}\n"
        "  db: {target: b, ports: ['5432'], healthcheck: {type: tcp, timeout: 250ms}}\n"
        "  off: {target: c, ports: ['1234'], healthcheck: {disable: true}}\n"
        "  plain: {target: d, ports: ['4321']}\n"
    )
    checks = _load(text, tmp_path)
    assert checks["api"] == HealthSpec("http", path="/healthz", expect=((204, 204),),
                                       interval=1.0, retries=5)  # fmt: skip
    assert checks["db"] == HealthSpec("tcp", interval=1.0, timeout=0.25, retries=5)
    assert checks["off"] is None
    assert checks["plain"] == HealthSpec("http", interval=1.0, retries=5)  # defaults apply


def test_timings_only_in_defaults_declare_no_check(tmp_path: Path) -> None:
    text = "defaults:\n  healthcheck: {interval: 1s}\n" + HEAD
    assert _load(text, tmp_path) == {"db": None}


def test_exec_string_runs_under_sh_and_json_round_trip(tmp_path: Path) -> None:
    text = HEAD + "    healthcheck: {type: exec, command: 'pg_isready -p $$PFCOMPOSE_DB_5432'}\n"
    check = _load(text, tmp_path)["db"]
    assert check is not None
    assert check.command == ("sh", "-c", "pg_isready -p $PFCOMPOSE_DB_5432")
    assert health_from_json(json.loads(json.dumps(health_to_json(check)))) == check


def test_config_yaml_output_loads_to_the_same_checks(tmp_path: Path) -> None:
    text = (
        "forwards:\n"
        "  api: {target: a, ports: ['8080:http'], healthcheck: {type: http, path: /h, "
        "expect: [200, '300-302'], host: api.local, https: true, insecure: true}}\n"
        "  db: {target: b, ports: ['5432'], healthcheck: {type: exec, command: [pg_isready]}}\n"
    )
    (tmp_path / "f.yaml").write_text(text)
    rendered = subprocess.run(
        [sys.executable, "-m", "pfcompose", "config", "-f", "f.yaml"], cwd=tmp_path,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (tmp_path / "again.yaml").write_text(rendered)
    first = _load(text, tmp_path)
    reloaded = load_plan([tmp_path / "again.yaml"], environ={})
    again = {name: spec.health for name, spec in reloaded.forwards.items()}
    assert first == again and first["api"] is not None and first["api"].insecure


def test_schema_describes_healthcheck() -> None:
    schema = json_schema()
    check = schema["$defs"]["HealthCheck"]
    assert set(check["properties"]) >= {"type", "path", "expect", "command", "interval",
                                         "timeout", "retries", "start_period"}  # fmt: skip
    assert check["additionalProperties"] is False
    forward = schema["$defs"]["Forward"]["properties"]["healthcheck"]
    assert "HealthCheck" in json.dumps(forward)


def test_schema_accepts_and_rejects_like_the_loader() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    good = {"forwards": {"db": {"target": "a", "ports": [5432], "healthcheck": {
        "type": "http", "path": "/h", "expect": [200, "300-302"], "interval": "1s",
        "retries": 2, "start_period": 5}}}}  # fmt: skip
    assert not list(validator.iter_errors(good))
    for bad in ({"type": "udp"}, {"type": "tcp", "retries": 0}, {"type": "tcp", "pth": "/"},
                {"type": "tcp", "interval": "soon"}):  # fmt: skip
        document = {"forwards": {"db": {"target": "a", "ports": [1], "healthcheck": bad}}}
        assert list(validator.iter_errors(document)), bad
