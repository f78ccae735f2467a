"""Fault injection over HTTP: the ``/_sandbox/`` admin API (JSON in, JSON out).

Every endpoint maps to one method of :class:`~pfcompose.sandbox.server.Sandbox`, so a
test in another process (or a shell with curl) can break the cluster the same way
an in-process test does:

=======  ========================================  =============================  ==========
method   path                                      body                           answer
=======  ========================================  =============================  ==========
GET      /_sandbox/state                           –                              pods, ports
POST     /_sandbox/pods/NS/NAME/kill               –                              {}
POST     /_sandbox/pods/NS/NAME/replace            {"grace": 1.0}                 {"pod": new}
POST     /_sandbox/pods/NS/NAME/phase              {"phase": "Pending"}           {}
POST     /_sandbox/pods/NS/NAME/ready              {"ready": false}               {}
POST     /_sandbox/pods/NS/NAME/reset              –                              {"reset": n}
POST     /_sandbox/pods/NS/NAME/app                {"port": P, "fault": F}        {}
POST     /_sandbox/connections/drop                –                              {"dropped": n}
POST     /_sandbox/streams                         {"refuse": bool, "delay": s,   {}
                                                   "dial_error": KIND|null}
POST     /_sandbox/apiserver/restart               {"down": seconds}              {}
GET      /_sandbox/proxy                           –                              counters
POST     /_sandbox/proxy                           {"fault": F, "times": n}       counters
GET      /_sandbox/auth                            –                              mints, seen
POST     /_sandbox/tokens (no credential needed)   {"ttl": seconds}               token
=======  ========================================  =============================  ==========
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["AdminTarget", "StreamFaults", "handle_admin"]


@dataclass
class StreamFaults:
    """Knobs the kubelet reads for every new stream."""

    refuse: bool = False
    """Reset every new stream instead of replying (the client sees ``stream reset``)."""
    delay: float = 0.0
    """Seconds to wait before a SYN_REPLY (a slow or overloaded kubelet)."""
    dial_error: str | None = None
    """Answer every pod dial with this runtime error instead of connecting
    (``kubelet.DIAL_ERRORS``: ``refused``, or a pod-gone wording such as ``netns-closed``)."""


class AdminTarget(Protocol):
    stream_faults: StreamFaults

    def describe(self) -> dict[str, Any]: ...
    async def kill_pod(self, name: str, namespace: str = "default") -> None: ...
    async def replace_pod(
        self, name: str, namespace: str = "default", *, grace: float = 1.0
    ) -> str: ...
    def set_phase(self, name: str, phase: str, namespace: str = "default") -> None: ...
    def set_ready(self, name: str, ready: bool, namespace: str = "default") -> None: ...
    def reset_pod_connections(self, name: str, namespace: str = "default") -> int: ...
    def set_app_fault(
        self, name: str, port: int, fault: str | None, namespace: str = "default"
    ) -> None: ...
    def drop_upgraded_connections(self) -> int: ...
    def restart_api_soon(self, down: float) -> None: ...
    def proxy_admin(self, method: str, args: dict[str, Any]) -> dict[str, Any]: ...
    def auth_admin(self) -> dict[str, Any]: ...


_POD = re.compile(r"^/_sandbox/pods/(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<verb>[a-z]+)$")


PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
"""The pod phases Kubernetes has; anything else would confuse every client."""


def _seconds(args: dict[str, Any], key: str, default: float) -> float:
    """A duration from the body: a finite number >= 0 (a negative sleep would crash the task)."""
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValueError(f"{key!r} must be a number of seconds >= 0, not {json.dumps(value)}")
    return float(value)


def _phase(args: dict[str, Any]) -> str:
    phase = args["phase"]
    if phase not in PHASES:
        raise ValueError(f"'phase' must be one of {', '.join(PHASES)}, not {json.dumps(phase)}")
    return str(phase)


def _error(code: int, message: str) -> tuple[int, Any]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }


async def handle_admin(target: AdminTarget, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """Answer one admin request: (HTTP status, JSON value)."""
    try:
        args: dict[str, Any] = json.loads(body) if body.strip() else {}
    except ValueError:
        return _error(400, "the body must be JSON")
    if not isinstance(args, dict):
        return _error(400, "the body must be a JSON object")
    if path == "/_sandbox/state" and method == "GET":
        return 200, target.describe()
    if path == "/_sandbox/auth" and method == "GET":
        return 200, target.auth_admin()
    if path == "/_sandbox/proxy" and method in ("GET", "POST"):
        try:
            return 200, target.proxy_admin(method, args)
        except LookupError as exc:
            return _error(404, str(exc))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
    if method != "POST":
        return _error(405, f"{method} {path}: use POST")
    try:
        if m := _POD.match(path):
            ns, name, verb = m["ns"], m["name"], m["verb"]
            if verb == "kill":
                await target.kill_pod(name, ns)
                return 200, {}
            if verb == "replace":
                return 200, {
                    "pod": await target.replace_pod(name, ns, grace=_seconds(args, "grace", 1.0))
                }
            if verb == "phase":
                target.set_phase(name, _phase(args), ns)
                return 200, {}
            if verb == "ready":
                target.set_ready(name, bool(args["ready"]), ns)
                return 200, {}
            if verb == "reset":
                return 200, {"reset": target.reset_pod_connections(name, ns)}
            if verb == "app":  # F: refuse, error (HTTP 500), hang, none
                port = args["port"]
                if isinstance(port, bool) or not isinstance(port, int):
                    raise ValueError(f"'port' must be a port number, not {json.dumps(port)}")
                fault = args.get("fault")
                target.set_app_fault(name, port, None if fault is None else str(fault), ns)
                return 200, {}
        elif path == "/_sandbox/connections/drop":
            return 200, {"dropped": target.drop_upgraded_connections()}
        elif path == "/_sandbox/streams":
            if "refuse" in args:
                target.stream_faults.refuse = bool(args["refuse"])
            if "delay" in args:
                target.stream_faults.delay = _seconds(args, "delay", 0.0)
            if "dial_error" in args:
                kinds = (
                    "refused",
                    "netns-closed",
                    "not-in-store",
                    "crio-not-running",
                    "pod-not-found",
                )
                kind = args["dial_error"]
                if kind is not None and kind not in kinds:
                    raise ValueError(
                        f"'dial_error' must be one of {', '.join(kinds)} or null, "
                        f"not {json.dumps(kind)}"
                    )
                target.stream_faults.dial_error = kind
            return 200, {
                "refuse": target.stream_faults.refuse,
                "delay": target.stream_faults.delay,
                "dial_error": target.stream_faults.dial_error,
            }
        elif path == "/_sandbox/apiserver/restart":
            target.restart_api_soon(_seconds(args, "down", 0.5))
            return 200, {}
    except KeyError as exc:
        missing = exc.args[0] if exc.args else ""
        if isinstance(missing, str):
            return _error(400, f"missing field {missing!r}")
        return _error(404, f'pods "{path.split("/")[4]}" not found')
    except LookupError as exc:
        return _error(404, str(exc))
    except (TypeError, ValueError) as exc:
        return _error(400, str(exc))
    return _error(404, f"no admin endpoint {method} {path}")
