"""Permissions during `up` (issue 12 §3, issue 17): a 403 is one line naming the missing
rule, the listeners stay, and a rule added later is picked up without a restart; with
`transport: websocket`, ready means a port-forward was allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from uphelp import Recorder, echo_round_trip, local_port, running_up

from pfcompose.config import ForwardSpec
from pfcompose.kube import ClusterAccess, load_access
from pfcompose.sandbox.pytest_plugin import DEFAULT_STATE, kubectl_port_forward, requires_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.up.events import Kind

READ = {"name": "read", "subjects": ["bob"], "verbs": ["get", "list", "watch"],
        "resources": ["pods", "services"], "namespaces": ["default"]}


def _state(*rules: dict[str, Any]) -> State:
    return State.from_dict({**DEFAULT_STATE, "users": [{"name": "bob", "token": "bob-token"}],
                            "rbac": [READ, *rules]})


def _file(transport: str) -> str:
    return ("forwards:\n  e:\n    target: pod/echo\n    ports: [':5000']\n"
            f"    transport: {transport}\n    keepalive: 60s\n"
            "    reconnect: {initial_backoff: 50ms, max_backoff: 200ms, hold: 10s}\n")


def _bob(sb: Sandbox, tmp_path: Path) -> Any:
    kubeconfig = str(sb.write_user_kubeconfig("bob", tmp_path / "bob.kubeconfig"))

    async def load(spec: ForwardSpec) -> ClusterAccess:
        return await load_access(kubeconfig, None)

    return load


def _errors(events: Recorder) -> list[str]:
    return events.messages("e", Kind.ERROR)


@pytest.mark.parametrize(("transport", "verb"), [
    ("spdy", "create"), ("websocket", "get"), ("auto", "create"), ("spdy-over-websocket", "get"),
])
async def test_forbidden_is_one_line_listeners_stay_and_a_new_rule_works(
        tmp_path: Path, transport: str, verb: str) -> None:
    async with run_sandbox(_state()) as sb, running_up(
            sb, tmp_path, _file(transport), loader=_bob(sb, tmp_path)) as (supervisor, events):
            line = (f'forbidden: User "bob" is missing {verb} pods/portforward '
                    "in namespace default")
            await events.wait_for(lambda e: e.kind is Kind.ERROR and e.message == line)
            assert not any(e.data.get("state") == "ready" for e in events.events)
            assert all("\n" not in m and "Status" not in m for m in _errors(events))
            # it retries with backoff, printing the line once, and keeps its port
            status = next(s for s in supervisor.statuses if s.name == "e")
            with trio.fail_after(10):
                while status.reconnects < 3:
                    await trio.sleep(0.02)
            assert _errors(events).count(line) == 1
            port = local_port(supervisor, "e")
            # the role binding arrives: no restart needed
            sb.state.rbac.update({"rbac": [READ, {
                "subjects": ["bob"], "verbs": ["get", "create"],
                "resources": ["pods/portforward"], "namespaces": ["default"]}]})
            await events.ready("e", timeout=10)
            half_close = transport != "websocket"
            assert await echo_round_trip(port, b"now", half_close=half_close) == b"now"


async def test_websocket_ready_needs_create_from_1_35(tmp_path: Path) -> None:
    get_only = {"subjects": ["bob"], "verbs": ["get"], "resources": ["pods/portforward"]}
    async with run_sandbox(_state(get_only), emulate="1.35") as sb, running_up(
            sb, tmp_path, _file("websocket"), loader=_bob(sb, tmp_path)) as (_, events):
            line = ('forbidden: User "bob" is missing create pods/portforward '
                    "in namespace default")
            await events.wait_for(lambda e: e.kind is Kind.ERROR and e.message == line)
            assert not any(e.data.get("state") == "ready" for e in events.events)


async def test_websocket_not_ready_when_unauthorized(tmp_path: Path) -> None:
    """The probe shows a 401 before ready, too (issue 17: no ready forward whose every
    connection fails ``Unauthorized``)."""
    async with run_sandbox(_state()) as sb:
        sb.state.rbac.update({"users": [{"name": "bob", "token": "other"}]})
        async with running_up(sb, tmp_path, _file("websocket"), loader=_bob(sb, tmp_path)) as (
                _, events):
            await events.wait_for(lambda e: e.kind is Kind.ERROR)
            # the kubeconfig still has bob-token, which the server no longer knows:
            # every failure is the 401, never a ready
            with trio.move_on_after(0.5):
                await events.ready("e")
                raise AssertionError("ready although every upgrade is refused")


@pytest.mark.kubectl
@requires_kubectl
async def test_kubectl_and_pfcompose_refused_alike(tmp_path: Path) -> None:
    """kubectl 1.32 and pfcompose against the same rules: same missing verb."""
    async with run_sandbox(_state(), tls=True) as sb:
        kubeconfig = sb.write_user_kubeconfig("bob", tmp_path / "bob.kubeconfig")
        with pytest.raises(RuntimeError) as refused:
            async with kubectl_port_forward(kubeconfig, "pod/echo", ":5000"):
                pass
        wanted = ('pods "echo" is forbidden: User "bob" cannot create resource '
                  '"pods/portforward" in API group "" in the namespace "default"')
        assert wanted in str(refused.value)
        async with running_up(sb, tmp_path, _file("auto"), loader=_bob(sb, tmp_path)) as (
                _, events):
            await events.wait_for(lambda e: e.kind is Kind.ERROR and e.message == (
                'forbidden: User "bob" is missing create pods/portforward in namespace default'))


async def test_forbidden_target_read_is_one_line_too(tmp_path: Path) -> None:
    async with run_sandbox(_state()) as sb:
        sb.state.rbac.update({"rbac": []})
        async with running_up(sb, tmp_path, _file("spdy"), loader=_bob(sb, tmp_path)) as (
                _, events):
            await events.wait_for(lambda e: e.kind is Kind.ERROR and e.message == (
                'forbidden: User "bob" is missing get pods in namespace default'))


def test_forbidden_line_wordings() -> None:
    from pfcompose.kube import KubeApiError
    from pfcompose.kube.permissions import forbidden_line
    from pfcompose.wire.errors import UpgradeError

    cluster = KubeApiError(403, "Forbidden", 'nodes is forbidden: User "bob" cannot list '
                                             'resource "nodes" in API group "" at the cluster '
                                             "scope")
    assert forbidden_line(cluster) == 'forbidden: User "bob" is missing list nodes cluster-wide'
    apps = UpgradeError('deployments.apps "web" is forbidden: User "bob" cannot get resource '
                        '"deployments" in API group "apps" in the namespace "shop"', status=403)
    assert forbidden_line(apps) == (
        'forbidden: User "bob" is missing get deployments.apps in namespace shop')
    other = UpgradeError("this gateway passes WebSocket upgrades only", status=403)
    assert forbidden_line(other) is None  # not RBAC: the gateway's words stay
    assert forbidden_line(KubeApiError(404, "NotFound", 'pods "x" not found')) is None
