"""The access cache of long-running forwards: when evaluated material is reused, when
it is evaluated again, and the helper process that evaluates it out of process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
import yaml

from pfcompose.config.addresses import ListenAddress
from pfcompose.config.ports import PortMap
from pfcompose.config.spec import ForwardSpec, ReconnectPolicy
from pfcompose.config.target import PodTarget
from pfcompose.kube.access import AccessMaterial, KubeConfigError, build_access
from pfcompose.kube.cache import (
    ERROR_TTL,
    EXPIRY_MARGIN,
    AccessCache,
    ForwardAccess,
    evaluate_in_subprocess,
    evaluate_in_thread,
)
from pfcompose.kube.kubeconfig import evaluate

PLUGIN = """\
import json, sys
count_file, expires = sys.argv[1], sys.argv[2]
try:
    n = int(open(count_file).read()) + 1
except OSError:
    n = 1
open(count_file, "w").write(str(n))
status = {"token": f"tok-{n}"}
if expires:
    status["expirationTimestamp"] = expires
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": status}))
"""


def write_kubeconfig(path: Path, user: dict[str, Any], server: str = "http://127.0.0.1:9") -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
    }))  # fmt: skip
    return str(path)


def exec_user(tmp_path: Path, expires: str = "") -> dict[str, Any]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    return {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable, "args": [str(plugin), str(tmp_path / "count"), expires],
        "interactiveMode": "Never",
    }}  # fmt: skip


def auth(access: Any) -> str:
    return dict(access.endpoint.headers)["Authorization"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- material --------------------------------------------------------------------------


def test_material_json_round_trip_keeps_everything_and_repr_hides_secrets(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    material = AccessMaterial(
        context="c", namespace="ns", scheme="https", host="127.0.0.1", port=6443, user="u",
        path_prefix="/k8s", tls_server_name="api", ca_pem=ca.cert_pem.bytes(),
        cert_pem=cert.cert_chain_pems[0].bytes(), key_pem=cert.private_key_pem.bytes(),
        authorization="Bearer s3cret", expires=123.5, sources=(("/x", 1, 2),),
    )  # fmt: skip
    again = AccessMaterial.from_json(json.loads(json.dumps(material.to_json())))
    assert again == material
    assert "s3cret" not in repr(material) and "PRIVATE" not in repr(material)
    access = build_access(again)
    assert access.server == "https://127.0.0.1:6443/k8s"
    assert access.endpoint.ssl_context is not None
    assert auth(access) == "Bearer s3cret"


def test_material_records_its_files_and_the_exec_expiry(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    path = write_kubeconfig(tmp_path / "kc", {"tokenFile": str(token)})
    material = evaluate(path, None)
    assert [stamp[0] for stamp in material.sources] == [path, str(token)]
    assert material.expires is None and material.authorization == "Bearer abc"

    path = write_kubeconfig(tmp_path / "kc2", exec_user(tmp_path, "2030-01-02T03:04:05Z"))
    assert evaluate(path, None).expires == 1893553445.0


# -- the cache -------------------------------------------------------------------------


async def test_cached_until_a_source_file_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    path = write_kubeconfig(tmp_path / "kc", {"tokenFile": str(token)})
    cache = AccessCache(evaluate_in_thread)
    first = await cache.get(path, None)
    assert await cache.get(path, None) is first  # no re-evaluation
    assert cache.evaluations == 1
    token.write_text("second")  # other size: a changed stamp even within one mtime tick
    assert auth(await cache.get(path, None)) == "Bearer second"
    assert cache.evaluations == 2


async def test_exec_credential_reused_until_near_its_expiry_or_a_401(tmp_path: Path) -> None:
    clock = Clock()
    path = write_kubeconfig(tmp_path / "kc", exec_user(tmp_path, "2001-09-09T01:50:00Z"))
    expires = 1_000_000_200.0  # the timestamp above
    clock.now = expires - EXPIRY_MARGIN - 100
    cache = AccessCache(evaluate_in_thread, clock=clock)
    assert auth(await cache.get(path, None)) == "Bearer tok-1"
    clock.now += 50
    assert auth(await cache.get(path, None)) == "Bearer tok-1"  # the plugin did not run
    clock.now = expires - EXPIRY_MARGIN
    assert auth(await cache.get(path, None)) == "Bearer tok-2"  # renewed before expiry
    cache.invalidate(path, None)  # as after a 401
    assert auth(await cache.get(path, None)) == "Bearer tok-3"


async def test_a_short_lived_token_is_renewed_a_fifth_of_its_life_early(tmp_path: Path) -> None:
    """A 5-second token: renewed 1 s before it lapses (not at once, every time, as a
    fixed 10-second margin would), so it is never sent expired."""
    clock = Clock()
    expires = 1_000_000_200.0  # 2001-09-09T01:50:00Z
    path = write_kubeconfig(tmp_path / "kc", exec_user(tmp_path, "2001-09-09T01:50:00Z"))
    clock.now = expires - 5.0
    cache = AccessCache(evaluate_in_thread, clock=clock)
    first = await cache.get(path, None)
    clock.now = expires - 1.01
    assert await cache.get(path, None) is first
    clock.now = expires - 1.0
    assert auth(await cache.get(path, None)) == "Bearer tok-2"
    assert cache.evaluations == 2


async def test_a_401_from_an_older_access_does_not_discard_a_newer_one(tmp_path: Path) -> None:
    """Fifty connections refused together re-evaluate once."""
    path = write_kubeconfig(tmp_path / "kc", exec_user(tmp_path))
    cache = AccessCache(evaluate_in_thread)
    old = await cache.get(path, None)
    cache.invalidate(path, None, old)
    new = await cache.get(path, None)
    for _ in range(3):
        cache.invalidate(path, None, old)  # the late refusals of the old token
    assert await cache.get(path, None) is new
    assert (auth(new), cache.evaluations) == ("Bearer tok-2", 2)


async def test_without_expiry_an_exec_credential_lasts_until_a_401(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", exec_user(tmp_path))
    cache = AccessCache(evaluate_in_thread)
    for _ in range(3):
        assert auth(await cache.get(path, None)) == "Bearer tok-1"
    cache.invalidate(path, None)
    assert auth(await cache.get(path, None)) == "Bearer tok-2"


async def test_concurrent_users_share_one_evaluation_and_errors_are_remembered_briefly(
    tmp_path: Path,
) -> None:
    clock = Clock()
    calls = 0

    async def failing(kubeconfig: str | None, context: str | None) -> AccessMaterial:
        nonlocal calls
        calls += 1
        await trio.sleep(0)
        raise KubeConfigError(f'context "{context}" not found in kubeconfig')

    cache = AccessCache(failing, clock=clock)
    errors: list[str] = []

    async def use() -> None:
        with pytest.raises(KubeConfigError) as info:
            await cache.get("kc", "x")
        errors.append(str(info.value))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(use)
    assert calls == 1 and errors == ['context "x" not found in kubeconfig'] * 50
    clock.now += ERROR_TTL
    await use()
    assert calls == 2


async def test_forward_access_picks_the_forwards_context(tmp_path: Path) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def record(kubeconfig: str | None, context: str | None) -> AccessMaterial:
        seen.append((kubeconfig, context))
        return AccessMaterial(context=context or "current", namespace=None, scheme="http",
                              host="127.0.0.1", port=9)  # fmt: skip

    def spec(context: str | None, own: bool) -> ForwardSpec:
        return ForwardSpec(
            name="f", to=PodTarget("x"), context=context, namespace=None,
            ports=(PortMap(0, 80),), addresses=("localhost",),
            listen=(ListenAddress("127.0.0.1", "tcp4", "any"),), transport="auto",
            profiles=(), reconnect=ReconnectPolicy(), keepalive=5.0, quiet_connections=False,
            context_is_own=own,
        )  # fmt: skip

    loader = ForwardAccess("kc", "flag", AccessCache(record))
    await loader(spec("defaults", own=False))  # --context beats defaults.context
    await loader(spec("mine", own=True))  # the forward's own context beats --context
    assert seen == [("kc", "flag"), ("kc", "mine")]
    loader.invalidate(spec("mine", own=True))
    await loader(spec("mine", own=True))
    assert seen[-1] == ("kc", "mine") and len(seen) == 3


# -- the helper process ------------------------------------------------------------------


async def test_the_helper_process_evaluates_like_the_library(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc")
    path = write_kubeconfig(tmp_path / "kc", {"tokenFile": str(token)})
    assert await evaluate_in_subprocess(path, None) == evaluate(path, None)
    with pytest.raises(KubeConfigError, match=r'^context "nope" not found in kubeconfig$'):
        await evaluate_in_subprocess(path, "nope")


async def test_exec_plugins_run_by_the_helper_do_not_inherit_our_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    plugin = tmp_path / "env_plugin.py"
    plugin.write_text(
        "import json, os\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        " 'kind': 'ExecCredential', 'status': {'token': os.environ.get('PYTHONPATH', 'unset')}}))\n"
    )
    path = write_kubeconfig(tmp_path / "kc", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin)], "interactiveMode": "Never",
    }})  # fmt: skip
    material = await evaluate_in_subprocess(path, None)
    assert material.authorization == "Bearer unset"
    assert os.environ.get("PYTHONPATH") is None


async def test_renewal_in_the_background_keeps_callers_from_waiting(tmp_path: Path) -> None:
    """While the plugin runs for an expiring (still valid) credential, callers go on
    with the current one; the renewed one is used once it is there."""
    clock = Clock()
    release = trio.Event()
    runs = 0

    async def slow_plugin(kubeconfig: str | None, context: str | None) -> AccessMaterial:
        nonlocal runs
        runs += 1
        if runs > 1:
            await release.wait()
        return AccessMaterial(context="c", namespace=None, scheme="http", host="127.0.0.1",
                              port=1, authorization=f"Bearer tok-{runs}",
                              expires=clock.now + 100)

    cache = AccessCache(slow_plugin, clock=clock)
    async with cache.renewing_in_background():
        first = await cache.get(None, "c")
        clock.now += 95  # within the renewal margin, not expired
        for _ in range(3):
            assert await cache.get(None, "c") is first  # nobody waits for the plugin
        await trio.testing.wait_all_tasks_blocked()
        assert runs == 2  # one renewal, running
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert auth(await cache.get(None, "c")) == "Bearer tok-2"
        clock.now += 101  # expired: no background shortcut, the caller waits
        release = trio.Event()
        release.set()
        assert auth(await cache.get(None, "c")) == "Bearer tok-3"


async def test_a_failed_background_renewal_keeps_the_valid_credential(tmp_path: Path) -> None:
    clock = Clock()
    runs = 0

    async def flaky(kubeconfig: str | None, context: str | None) -> AccessMaterial:
        nonlocal runs
        runs += 1
        if runs == 2:
            raise KubeConfigError('exec plugin "x" failed: network down', retryable=True)
        return AccessMaterial(context="c", namespace=None, scheme="http", host="127.0.0.1",
                              port=1, authorization=f"Bearer tok-{runs}",
                              expires=clock.now + 100)

    cache = AccessCache(flaky, clock=clock)
    async with cache.renewing_in_background():
        first = await cache.get(None, "c")
        clock.now += 95
        assert await cache.get(None, "c") is first  # renewal starts, fails in the background
        await trio.testing.wait_all_tasks_blocked()
        assert runs == 2
        assert await cache.get(None, "c") is first  # still valid: kept, not retried at once
        await trio.testing.wait_all_tasks_blocked()
        assert runs == 2
        clock.now += 1.0  # ERROR_TTL later: renewed again
        assert await cache.get(None, "c") is first
        await trio.testing.wait_all_tasks_blocked()
        assert auth(await cache.get(None, "c")) == "Bearer tok-3"
