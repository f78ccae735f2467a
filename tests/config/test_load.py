"""load_plan end to end: merging, discovery, overrides, .env, profiles, conflicts, warnings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pfcompose.config import ConfigErrors, ForwardSpec, ListenAddress, PortMap, load_plan
from pfcompose.config.plan import ReconnectPolicy
from pfcompose.config.target import PodTarget

Write = Callable[[str, str], Path]  # the ``write`` fixture of conftest.py


def errors_of(*args: object, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_plan(*args, **kwargs)  # type: ignore[arg-type]
    return [str(problem) for problem in info.value.problems]


def test_defaults_are_applied(write: Write, project: Path) -> None:
    write("forwards.yaml", "forwards:\n  db:\n    target: postgres-0\n    ports: [5432]\n")
    plan = load_plan(environ={})
    assert plan.name == "shop"
    assert plan.project_directory == project
    assert plan.files == (project / "forwards.yaml",)
    assert plan.warnings == ()
    assert plan.forwards == {
        "db": ForwardSpec(
            name="db", to=PodTarget("postgres-0"), context=None, namespace=None,
            ports=(PortMap(5432, 5432),), addresses=("localhost",),
            listen=(ListenAddress("127.0.0.1", "tcp4", "all"),
                    ListenAddress("::1", "tcp6", "all")),
            transport="auto", profiles=(), reconnect=ReconnectPolicy(True, 0.2, 10.0, 10.0),
            keepalive=5.0, quiet_connections=False,
        )
    }  # fmt: skip


def test_defaults_and_forward_settings_combine_field_by_field(write: Write) -> None:
    write(
        "forwards.yaml",
        """\
        defaults:
          context: dev
          namespace: shop
          reconnect: {enabled: false, hold: 2m}
          keepalive: 250ms
          quiet_connections: true
        forwards:
          db:
            target: svc/db
            namespace: data
            reconnect: {initial_backoff: 1, max_backoff: 1m30s}
            ports: ["1:2"]
        """,
    )
    spec = load_plan(environ={}).forwards["db"]
    assert (spec.context, spec.namespace, spec.keepalive, spec.quiet_connections) == (
        "dev",
        "data",
        0.25,
        True,
    )
    assert spec.reconnect == ReconnectPolicy(False, 1.0, 90.0, 120.0)


@pytest.mark.parametrize(
    ("target", "normalised"),
    [
        ("x", "pod/x"), ("pod/x", "pod/x"), ("po/x", "pod/x"), ("pods/x", "pod/x"),
        ("svc/x", "service/x"), ("service/x", "service/x"), ("services/x", "service/x"),
        ("deploy/x", "deployment/x"), ("deployment/x", "deployment/x"),
        ("sts/x", "statefulset/x"), ("statefulset/x", "statefulset/x"),
        ("rs/x", "replicaset/x"), ("replicaset/x", "replicaset/x"),
    ],
)  # fmt: skip
def test_target_kinds_are_normalised(write: Write, target: str, normalised: str) -> None:
    write("forwards.yaml", f"forwards:\n  a:\n    target: {target}\n    ports: [1]\n")
    assert load_plan(environ={}).forwards["a"].target == normalised


def test_files_merge_in_order(write: Write) -> None:
    base = write(
        "base.yaml",
        """\
        name: base
        defaults: {namespace: one, addresses: [localhost]}
        forwards:
          db: {target: pod/db, ports: ["5432", "9187"], context: dev}
          api: {target: svc/api, ports: [8080]}
        """,
    )
    extra = write(
        "extra.yaml",
        """\
        defaults: {addresses: ["127.0.0.1"]}
        forwards:
          db: {ports: ["15432:5432"], context: null}
          web: {target: deploy/web, ports: [3000]}
        """,
    )
    plan = load_plan([base, extra], environ={})
    assert list(plan.forwards) == ["db", "api", "web"]  # first appearance order
    db = plan.forwards["db"]
    assert db.ports == (PortMap(15432, 5432),)  # lists replace
    assert db.context is None  # null unsets
    assert db.namespace == "one"  # mappings merge key by key
    assert db.addresses == ("127.0.0.1",)
    assert plan.name == "base"


def test_problem_positions_point_into_the_file_that_wrote_the_value(write: Write) -> None:
    base = write("base.yaml", "forwards:\n  db:\n    target: pod/db\n    ports: [1]\n")
    other = write("other.yaml", "forwards:\n  db:\n    ports: ['${P}:0']\n")
    assert errors_of([base, other], environ={"P": "80"}) == [
        "other.yaml:3:13: forwards.db.ports[0]: remote port must be > 0"
    ]


def test_discovery_walks_up_and_takes_the_override(
    write: Write, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("forwards.yaml", "forwards:\n  db: {target: pod/db, ports: [1]}\n")
    write("forwards.override.yml", "forwards:\n  db: {ports: [':X']}\n")
    write("sub/deeper/.keep", "")
    monkeypatch.chdir(project / "sub" / "deeper")
    assert errors_of(environ={}) == [
        "../../forwards.override.yml:2:16: forwards.db.ports[0]: error parsing remote port 'X': "
        'strconv.ParseUint: parsing "X": invalid syntax'
    ]
    write("forwards.override.yml", "forwards:\n  db: {ports: [':2']}\n")
    plan = load_plan(environ={})
    assert plan.forwards["db"].ports == (PortMap(0, 2),)
    assert plan.files == (project / "forwards.yaml", project / "forwards.override.yml")
    assert plan.project_directory == project
    assert plan.name == "shop"


def test_discovery_order_and_yaml_override_preferred(write: Write, project: Path) -> None:
    write("forwards.yaml", "forwards: {a: {target: a, ports: [1]}}\n")
    write("pfcompose.yml", "forwards: {b: {target: b, ports: [1]}}\n")
    write("pfcompose.override.yaml", "forwards: {c: {target: c, ports: [2]}}\n")
    write("pfcompose.override.yml", "forwards: {d: {target: d, ports: [3]}}\n")
    plan = load_plan(environ={})
    assert list(plan.forwards) == ["b", "c"]
    assert plan.files == (project / "pfcompose.yml", project / "pfcompose.override.yaml")


def test_no_file_found(project: Path) -> None:
    assert errors_of(environ={}) == [
        f"no configuration file found in {project} or its parents "
        "(looked for pfcompose.yaml, pfcompose.yml, forwards.yaml, forwards.yml)"
    ]


def test_missing_file(project: Path) -> None:
    assert errors_of([Path("nope.yaml")], environ={}) == [
        "nope.yaml: cannot read file: no such file or directory"
    ]


def test_project_directory_option(write: Write, project: Path) -> None:
    write("elsewhere/forwards.yaml", "forwards: {a: {target: a, ports: ['${P}']}}\n")
    write("elsewhere/.env", "P=7\n")
    plan = load_plan(project_directory=Path("elsewhere"), environ={})
    assert plan.name == "elsewhere"
    assert plan.forwards["a"].ports == (PortMap(7, 7),)


@pytest.mark.parametrize(
    ("name_line", "option", "expected"),
    [
        ("name: Web Shop!\n", "other", "webshop"),  # name: in the file first
        ("", "My_Proj-2", "my_proj-2"),  # then -p
        ("", None, "shop"),  # then the directory name
    ],
)
def test_project_name(write: Write, name_line: str, option: str | None, expected: str) -> None:
    write("forwards.yaml", name_line + "forwards: {}\n")
    assert load_plan(project_name=option, environ={}).name == expected


def test_env_file_and_environment_precedence(write: Write) -> None:
    write(".env", "# comment\nNS=from-dotenv\nCTX=dotenv-ctx\nexport PORT='9000'\n")
    write(
        "forwards.yaml",
        """\
        forwards:
          a: {target: a, namespace: $NS, context: "${CTX}", ports: ["${PORT}:80"]}
        """,
    )
    spec = load_plan(environ={"CTX": "from-env"}).forwards["a"]
    assert (spec.namespace, spec.context, spec.ports) == (
        "from-dotenv",
        "from-env",
        (PortMap(9000, 80),),
    )
    write("custom.env", "NS=custom\n")
    spec = load_plan(env_files=[Path("custom.env")], environ={}).forwards["a"]
    assert spec.namespace == "custom"  # --env-file replaces .env
    assert spec.context is None  # ${CTX} unset: a warning and empty (= unset)
    assert errors_of(env_files=[Path("missing.env")], environ={}) == [
        "missing.env: cannot read file: no such file or directory"
    ]


def test_unset_variable_is_a_warning(write: Write) -> None:
    write("forwards.yaml", "forwards:\n  a: {target: a, namespace: '${NS}', ports: [1234]}\n")
    plan = load_plan(environ={})
    assert [str(w) for w in plan.warnings] == [
        'forwards.yaml:2:29: forwards.a.namespace: The "NS" variable is not set. '
        "Defaulting to a blank string."
    ]
    assert plan.forwards["a"].namespace is None


PROFILED = """\
forwards:
  always: {target: a, ports: [1]}
  debug: {target: b, ports: [2], profiles: [debug]}
  ops: {target: c, ports: [3], profiles: [ops, debug]}
"""


def test_profiles(write: Write) -> None:
    write("forwards.yaml", PROFILED)
    assert list(load_plan(environ={}).forwards) == ["always"]
    assert list(load_plan(profiles=["ops"], environ={}).forwards) == ["always", "ops"]
    assert list(load_plan(profiles=["debug"], environ={}).forwards) == ["always", "debug", "ops"]
    assert list(load_plan(environ={"PFCOMPOSE_PROFILES": "ops,"}).forwards) == ["always", "ops"]
    assert list(load_plan(profiles=["*"], environ={}).forwards) == ["always", "debug", "ops"]


def test_naming_a_forward_activates_it(write: Write) -> None:
    write("forwards.yaml", PROFILED)
    assert list(load_plan(selected=["debug"], environ={}).forwards) == ["debug"]
    assert errors_of(selected=["debug", "nope"], environ={}) == ["no such forward: nope"]


def test_inactive_forwards_are_still_validated(write: Write) -> None:
    write("forwards.yaml", "forwards:\n  x: {target: a, ports: [0], profiles: [p]}\n")
    assert errors_of(environ={}) == [
        "forwards.yaml:2:26: forwards.x.ports[0]: remote port must be > 0"
    ]


def test_conflicts_across_files(write: Write) -> None:
    one = write("one.yaml", "forwards:\n  db: {target: a, ports: ['8080:80']}\n")
    two = write("two.yaml", "forwards:\n  api:\n    target: b\n    ports: [9000, 8080]\n")
    assert errors_of([one, two], environ={}) == [
        "two.yaml:4:19: forwards.api.ports[1]: local port 8080 on 127.0.0.1 conflicts with "
        "forwards.db.ports[0] on 127.0.0.1 (one.yaml:2:27)"
    ]


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        (["0.0.0.0"], ["127.0.0.1"], "0.0.0.0"),
        (["127.0.0.2"], ["0.0.0.0"], "127.0.0.2"),
        (["::"], ["localhost"], "::"),
        (["localhost"], ["127.0.0.1"], "127.0.0.1"),
        (["::ffff:127.0.0.1"], ["127.0.0.1"], "::ffff:127.0.0.1"),
        (["0.0.0.0"], ["::1"], None),  # different families
        (["::"], ["127.0.0.1"], None),  # tcp6 listeners are IPv6-only
        (["127.0.0.1"], ["127.0.0.2"], None),
    ],
)
def test_conflicts_with_wildcards(
    write: Write, first: list[str], second: list[str], conflict: str | None
) -> None:
    write(
        "forwards.yaml",
        f"""\
        forwards:
          a: {{target: a, ports: [8080], addresses: {first}}}
          b: {{target: b, ports: ['8080:1'], addresses: {second}}}
        """,
    )
    if conflict is None:
        assert list(load_plan(environ={}).forwards) == ["a", "b"]
        return
    lines = errors_of(environ={})
    assert len(lines) == 1
    assert lines[0].startswith("forwards.yaml:3:26: forwards.b.ports[0]: local port 8080 on ")
    assert lines[0].endswith(
        f"conflicts with forwards.a.ports[0] on {conflict} (forwards.yaml:2:26)"
    )


def test_random_ports_never_conflict_and_profiles_limit_conflicts(write: Write) -> None:
    write(
        "forwards.yaml",
        """\
        forwards:
          a: {target: a, ports: [':80', '0:81']}
          b: {target: b, ports: [':80']}
          c: {target: c, ports: [9000]}
          d: {target: d, ports: [9000], profiles: [x]}
        """,
    )
    assert list(load_plan(environ={}).forwards) == ["a", "b", "c"]
    assert errors_of(profiles=["x"], environ={}) == [
        "forwards.yaml:5:26: forwards.d.ports[0]: local port 9000 on 127.0.0.1 conflicts with "
        "forwards.c.ports[0] on 127.0.0.1 (forwards.yaml:4:26)"
    ]


def test_same_port_twice_in_one_forward(write: Write) -> None:
    write("forwards.yaml", "forwards:\n  a: {target: a, ports: ['80:1', '80:2'],"
                           " addresses: [0.0.0.0, 127.0.0.1]}\n")  # fmt: skip
    assert errors_of(environ={}) == [
        "forwards.yaml:2:26: forwards.a.ports[0]: local port 80: addresses 0.0.0.0 and "
        "127.0.0.1 overlap",
        "forwards.yaml:2:34: forwards.a.ports[1]: local port 80 on 0.0.0.0 conflicts with "
        "forwards.a.ports[0] on 0.0.0.0 (forwards.yaml:2:26)",
        "forwards.yaml:2:34: forwards.a.ports[1]: local port 80: addresses 0.0.0.0 and "
        "127.0.0.1 overlap",
    ]


def test_warnings(write: Write) -> None:
    write(
        "forwards.yaml",
        """\
        defaults: {addresses: [0.0.0.0]}
        forwards:
          a: {target: a, ports: ['80:8080', ':22', 1024]}
          b: {target: b, ports: [2000], addresses: [localhost, "::1", 192.168.0.10]}
          c: {target: c, ports: [2001]}
        """,
    )
    assert [str(w) for w in load_plan(environ={}).warnings] == [
        "forwards.yaml:1:24: defaults.addresses[0]: 0.0.0.0 is not a loopback address: "
        "the forward is reachable from the network",
        "forwards.yaml:3:26: forwards.a.ports[0]: local port 80 is below 1024: "
        "binding it needs privileges",
        "forwards.yaml:4:63: forwards.b.addresses[2]: 192.168.0.10 is not a loopback address: "
        "the forward is reachable from the network",
    ]
