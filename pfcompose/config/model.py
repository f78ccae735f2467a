"""The file format as pydantic models: the single source of validation *and* the JSON Schema.

Every field is optional at this level (``null`` = unset, so an override file can
unset a key); defaults and cross-field rules live in ``plan.py``. Unknown keys are
errors except ``x-`` keys at the top level, in ``defaults`` and in a forward, which the
loader strips before validation (a place for YAML anchors).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "NAME_PATTERN",
    "TRANSPORTS",
    "Defaults",
    "FileModel",
    "Forward",
    "HealthCheck",
    "Metrics",
    "PortLong",
    "Reconnect",
    "json_schema",
    "parse_duration",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
PROFILE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
TRANSPORTS = ("auto", "spdy", "spdy-over-websocket", "websocket")
Transport = Literal["auto", "spdy", "spdy-over-websocket", "websocket"]

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(rf"^(?:{_NUMBER}(?:ms|us|µs|ns|h|m|s))+$")
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|us|µs|ns|h|m|s)")
_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": rf"^(?:{_NUMBER}|(?:{_NUMBER}(?:ms|us|µs|ns|h|m|s))+)$"},
    ],
    "description": 'seconds, or a duration such as "250ms", "10s", "2m", "1m30s"',
}


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"10s"``, ``"2m"``, ``"1m30s"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise _duration_error(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif _DURATION.match(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise _duration_error(value)
    else:
        raise _duration_error(value)
    if not seconds >= 0 or seconds == float("inf"):
        raise _duration_error(value)
    return seconds


def _duration_error(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration",
        "invalid duration {value}: use seconds (a number >= 0) or a string such as "
        '"250ms", "10s", "2m"',
        {"value": repr(value)},
    )


Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]


def _label_value(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


LabelValue = Annotated[str, BeforeValidator(_label_value)]

_EXTENSIONS: dict[str, Any] = {"patternProperties": {"^x-": {}}}


class Reconnect(BaseModel):
    """How a forward comes back after its pod or connection goes away."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, description="reconnect at all (default true)")
    initial_backoff: Duration | None = Field(default=None, description="first wait (default 200ms)")
    max_backoff: Duration | None = Field(default=None, description="longest wait (default 10s)")
    hold: Duration | None = Field(
        default=None, description="how long new local connections wait for a session (default 10s)"
    )


class HealthCheck(BaseModel):
    """``healthcheck:`` — when a forward counts as healthy (fields as compose's healthcheck)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tcp", "http", "exec"] | None = Field(
        default=None,
        description="tcp: a connection through the forward succeeds; http: GET path answers "
        "a status in expect; exec: command exits 0",
    )
    port: int | str | None = Field(
        default=None,
        description="the forward's remote port (number or name) to check (default: its first port)",
    )
    path: str | None = Field(default=None, description='http: the path to GET (default "/")')
    expect: int | str | list[int | str] | None = Field(
        default=None,
        description='http: healthy statuses: 200, "200-299" or a list of them (default 200-399)',
    )
    host: str | None = Field(default=None, description="http: the Host header")
    https: bool | None = Field(default=None, description="http: speak TLS to the pod")
    insecure: bool | None = Field(
        default=None, description="http with https: do not verify the certificate"
    )
    command: str | list[str] | None = Field(
        default=None,
        description="exec: argv, or a string run by sh -c; gets the PFCOMPOSE_* variables",
    )
    interval: Duration | None = Field(default=None, description="between checks (default 5s)")
    timeout: Duration | None = Field(
        default=None, description="a check taking longer fails (default 2s)"
    )
    retries: int | None = Field(
        default=None, ge=1, description="consecutive failures before unhealthy (default 3)"
    )
    start_period: Duration | None = Field(
        default=None, description="failures in this time after ready do not count (default 0)"
    )
    disable: bool | None = Field(
        default=None, description="no health check (e.g. to opt out of defaults.healthcheck)"
    )


class PortLong(BaseModel):
    """The long form of a port: ``{local: 8080, remote: http}``."""

    model_config = ConfigDict(extra="forbid")

    local: int | None = Field(
        default=None, description="local port; 0 = random; omitted = the remote port (numeric only)"
    )
    remote: int | str = Field(description="remote port number or container/service port name")


def _port_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "~int"
    if isinstance(value, str):
        return "~str"
    if isinstance(value, dict | PortLong):
        return "~long"
    return None


PortEntry = Annotated[
    Annotated[int, Tag("~int")] | Annotated[str, Tag("~str")] | Annotated[PortLong, Tag("~long")],
    Discriminator(
        _port_kind,
        custom_error_type="port",
        custom_error_message='a port is a number, a string such as "8080:80" or a mapping '
        "{local, remote}",
    ),
]


def _selector_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "~str"
    if isinstance(value, dict):
        return "~map"
    return None


SelectorField = Annotated[
    Annotated[str, Tag("~str")] | Annotated[dict[str, LabelValue], Tag("~map")],
    Discriminator(
        _selector_kind,
        custom_error_type="selector",
        custom_error_message="a selector is a label map or a string such as "
        '"app=api,tier in (web)"',
    ),
]


class Defaults(BaseModel):
    """Settings every forward inherits unless it sets them itself."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_EXTENSIONS)

    context: str | None = Field(
        default=None, description="kubeconfig context (default: current-context)"
    )
    namespace: str | None = Field(
        default=None, description='namespace (default: the context\'s namespace, else "default")'
    )
    addresses: list[str] | None = Field(
        default=None, description="listen addresses, client-go rules: localhost or IP literals"
    )
    transport: Transport | None = Field(
        default=None, description="default auto: websocket, then spdy"
    )
    reconnect: Reconnect | None = None
    keepalive: Duration | None = Field(default=None, description="SPDY ping interval (default 5s)")
    quiet_connections: bool | None = Field(
        default=None, description='silence the "Handling connection for" lines (default false)'
    )
    healthcheck: HealthCheck | None = None


class Forward(Defaults):
    """One port-forward: a target (or selector), its ports and settings."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_EXTENSIONS)

    target: str | None = Field(
        None,
        description="pod/NAME or NAME; service|svc/, deployment|deploy/, statefulset|sts/, "
        "replicaset|rs/ NAME (exactly one of target and selector)",
    )
    selector: SelectorField | None = Field(
        default=None, description="pods by labels: a label map or a selector string"
    )
    ports: list[PortEntry] | None = Field(
        None,
        description='"5000", "8888:5000", ":5000", "8080:http", 5000 or {local, remote}',
    )
    profiles: list[Annotated[str, Field(pattern=PROFILE_PATTERN)]] | None = Field(
        default=None, description="active only when one of these profiles is selected"
    )


def _listen_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise PydanticCustomError("listen", "must be HOST:PORT, :PORT or a port number", {})
    return value


ListenText = Annotated[
    str,
    BeforeValidator(_listen_text),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 65535}, {"type": "string"}]}
    ),
]


class Metrics(BaseModel):
    """The Prometheus endpoint of ``up`` (``/metrics``)."""

    model_config = ConfigDict(extra="forbid")

    listen: ListenText | None = Field(
        default=None,
        description='HOST:PORT, :PORT or PORT to serve metrics on, e.g. "127.0.0.1:9464" '
        "(host default 127.0.0.1; another address makes them reachable from the network)",
    )


class FileModel(BaseModel):
    """A pfcompose file (``forwards.yaml``)."""

    model_config = ConfigDict(
        extra="forbid",
        title="pfcompose forwards file",
        json_schema_extra=_EXTENSIONS,
    )

    name: str | None = Field(default=None, description="project name (default: the directory name)")
    defaults: Defaults | None = None
    ports_env: str | None = Field(
        default=None,
        description="dotenv file of the actual local ports (PFCOMPOSE_<FORWARD>_<REMOTE>=<port>), "
        "relative to the project directory; rewritten when they change",
    )
    metrics: Metrics | None = Field(
        default=None, description="serve Prometheus metrics of the forwards (off by default)"
    )
    forwards: dict[str, Forward] = Field(
        description="forward name -> forward",
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN}},
    )


def json_schema() -> dict[str, Any]:
    """The published schema (``forwards.schema.json``), generated from the models."""
    schema = FileModel.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
