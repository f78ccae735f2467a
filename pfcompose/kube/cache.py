"""Cluster access for long-running forwards: evaluate a kubeconfig context once, reuse it
until it goes stale.

Material is stale when a file it was read from changed (the kubeconfig, a
``tokenFile``, a certificate), when an exec plugin's ``expirationTimestamp`` is
near, or when the API server answered 401 (:meth:`AccessCache.invalidate`) —
client-go's rules for exec credentials, and the reason a renewed token is picked
up without a restart. Checking costs a few ``stat`` calls per connect.

Evaluation itself is pluggable: :func:`evaluate_in_thread` runs the ``kubernetes``
package in this process (the command line, tests); :func:`evaluate_in_subprocess`
runs it in a short-lived helper process, so the forwarding runtime never loads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from pfcompose.config.spec import ForwardSpec
from pfcompose.kube.access import (
    AccessMaterial,
    ClusterAccess,
    KubeConfigError,
    Materials,
    build_access,
    chosen_context,
    file_stamp,
)

__all__ = [
    "AccessCache",
    "Evaluator",
    "ForwardAccess",
    "evaluate_in_subprocess",
    "evaluate_in_thread",
]

Key = tuple[str | None, str | None]  # (kubeconfig, context)
Evaluator = Callable[[str | None, str | None], Awaitable[AccessMaterial]]

EXPIRY_MARGIN = 10.0
"""Seconds before an exec credential's expiry at which it is renewed..."""

EXPIRY_FRACTION = 0.2
"""...or this fraction of its lifetime, if that is less: a 5-second token is renewed
1 s before it lapses, not at once every time (client-go renews only after expiry,
which lets a token lapse between the check and the request). A renewal starts at
least twice the last evaluation's duration early (a slow plugin, a busy machine),
but never in the first half of a lifetime."""

STILL_VALID_GUARD = 0.25
"""Seconds before expiry after which an expiring credential is no longer handed out
while its renewal runs (a request must reach the server before it lapses)."""

ERROR_TTL = 1.0
"""Seconds a failed evaluation is answered from memory: fifty forwards on one broken
context retry together, and must not run an exec plugin fifty times for it."""

HELPER_TIMEOUT = 120.0
"""Upper bound of one evaluation in the helper (exec plugins may prompt a browser login)."""


async def evaluate_in_thread(kubeconfig: str | None, context: str | None) -> AccessMaterial:
    from pfcompose.kube.kubeconfig import evaluate  # the kubernetes package: loaded late

    return await trio.to_thread.run_sync(evaluate, kubeconfig, context)


_HELPER = (
    "import sys; sys.path[:0] = sys.argv[1:2]; "
    "from pfcompose.kube.kubeconfig import main; sys.exit(main(sys.argv[2:3]))"
)


async def evaluate_in_subprocess(kubeconfig: str | None, context: str | None) -> AccessMaterial:
    """Evaluate in ``python -m pfcompose.kube.kubeconfig``'s equivalent, one JSON line each way.

    The helper runs with the normal site setup (this process may not) and finds this
    very package through its root directory, passed as an argument rather than in
    ``PYTHONPATH`` so that exec plugins written in Python do not inherit it.

    In the foreground on a terminal the helper gets this process's stdin and stderr,
    so an exec plugin whose ``interactiveMode`` allows it can prompt (a device code,
    a browser login) as under kubectl; otherwise (the daemon, a pipe) stdin is
    ``/dev/null`` and stderr is captured, and a plugin that needs a terminal fails
    with one line instead of waiting for input that cannot come.
    """
    from pfcompose.kube.access import stdin_is_terminal

    root = str(Path(__file__).resolve().parent.parent.parent)
    request = json.dumps({"kubeconfig": kubeconfig, "context": context})
    terminal = stdin_is_terminal()
    with trio.fail_after(HELPER_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-c", _HELPER, root, request],
            stdin=None if terminal else subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=not terminal,
            check=False,
        )
    try:
        answer = json.loads(result.stdout.decode("utf-8").splitlines()[0])
    except (ValueError, IndexError):
        lines = (result.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {result.returncode}"
        raise KubeConfigError(f"cannot evaluate the kubeconfig: {why}", retryable=True) from None
    if "error" in answer:
        raise KubeConfigError(str(answer["error"]), retryable=bool(answer.get("retryable")))
    return AccessMaterial.from_json(answer["material"])


@dataclass
class _Entry:
    material: AccessMaterial | None
    access: ClusterAccess | None
    error: KubeConfigError | None
    at: float
    took: float = 0.0
    """Seconds the evaluation took (a plugin may take seconds: renew that much earlier)."""


class AccessCache:
    """Evaluated contexts by (kubeconfig, context); one evaluation at a time per key."""

    def __init__(
        self, evaluate: Evaluator = evaluate_in_thread, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._evaluate = evaluate
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._locks: dict[Key, trio.Lock] = {}
        self._renewals: trio.Nursery | None = None
        self._renewing: set[Key] = set()
        self._renew_failed: dict[Key, float] = {}
        self.evaluations = 0  # how many times the evaluator ran (for tests and ``ps``)

    def seed(self, materials: Materials) -> None:
        """Material evaluated elsewhere (the command line, before starting the runtime)."""
        for kubeconfig, context, material in materials:
            self._entries[(kubeconfig, context)] = _Entry(
                material, build_access(material), None, self._clock()
            )

    def invalidate(
        self, kubeconfig: str | None, context: str | None, failed: ClusterAccess | None = None
    ) -> None:
        """The server refused the credentials (401): evaluate again on the next use.

        With ``failed`` (the access that got the 401), only if that is still the cached
        one: fifty connections refused together re-evaluate once, not fifty times.
        """
        key = (kubeconfig, context)
        entry = self._entries.get(key)
        if entry is not None and (failed is None or entry.access is failed):
            del self._entries[key]

    @asynccontextmanager
    async def renewing_in_background(self) -> AsyncIterator[None]:
        """Within the block, an expiring credential that is still valid is renewed by a
        background task: no caller waits for the plugin (measured: with 5-second tokens,
        one ``websocket`` dial per renewal otherwise waited ~1 s, the plugin's run)."""
        async with trio.open_nursery() as nursery:
            self._renewals = nursery
            try:
                yield
            finally:
                self._renewals = None
                nursery.cancel_scope.cancel()

    async def _renew(self, key: Key) -> None:
        try:
            async with self._locks[key]:
                entry = self._entries.get(key)
                if entry is None or self._stale(entry):
                    renewed = await self._refresh(key)
                    if (
                        renewed.error is not None
                        and entry is not None
                        and entry.access is not None
                        and self._still_valid(entry)
                    ):
                        # keep what still works; try again after ERROR_TTL, report at expiry
                        self._entries[key] = entry
                        self._renew_failed[key] = self._clock()
        except Exception:  # e.g. the helper timed out: the next caller evaluates and reports
            self._entries.pop(key, None)
        finally:
            self._renewing.discard(key)

    async def get(self, kubeconfig: str | None, context: str | None) -> ClusterAccess:
        key = (kubeconfig, context)
        lock = self._locks.setdefault(key, trio.Lock())
        if lock.locked():  # being renewed: a credential still valid is used meanwhile
            current = self._entries.get(key)
            if current is not None and current.access is not None and self._still_valid(current):
                return current.access
        async with lock:
            entry = self._entries.get(key)
            if entry is None or self._stale(entry):
                if (
                    self._renewals is not None
                    and entry is not None
                    and entry.access is not None
                    and self._still_valid(entry)
                ):
                    failed_at = self._renew_failed.get(key)
                    recently_failed = failed_at is not None and (
                        self._clock() - failed_at < ERROR_TTL
                    )
                    if key not in self._renewing and not recently_failed:
                        self._renewing.add(key)
                        self._renewals.start_soon(self._renew, key)  # locks after us
                    return entry.access
                entry = await self._refresh(key)
            if entry.error is not None:
                raise entry.error
            assert entry.access is not None
            return entry.access

    async def _refresh(self, key: Key) -> _Entry:
        self.evaluations += 1
        started = self._clock()
        try:
            material = await self._evaluate(*key)
            now = self._clock()
            entry = _Entry(material, build_access(material), None, now, max(0.0, now - started))
        except KubeConfigError as exc:
            entry = _Entry(None, None, exc, self._clock())
        self._entries[key] = entry
        return entry

    def _still_valid(self, entry: _Entry) -> bool:
        """Renewed early but not yet expired (and from unchanged files): while one caller
        runs the plugin, the others go on with it instead of waiting — measured, 5-second
        tokens otherwise held every ``websocket`` dial up to 1.6 s at each renewal."""
        assert entry.material is not None
        expires = entry.material.expires
        if expires is None or self._clock() >= expires - STILL_VALID_GUARD:
            return False
        return all(file_stamp(path) == (path, m, s) for path, m, s in entry.material.sources)

    def _stale(self, entry: _Entry) -> bool:
        now = self._clock()
        if entry.material is None:
            return now - entry.at >= ERROR_TTL
        expires = entry.material.expires
        if expires is not None:
            lifetime = max(0.0, expires - (entry.at - entry.took))
            margin = min(
                EXPIRY_MARGIN,
                max(lifetime * EXPIRY_FRACTION, 2 * entry.took + STILL_VALID_GUARD),
                lifetime / 2,
            )
            if now >= expires - margin:
                return True
        return any(file_stamp(path) != (path, m, s) for path, m, s in entry.material.sources)


class ForwardAccess:
    """The :data:`~pfcompose.up.forward.AccessLoader` of ``up``: a forward's own context wins
    over ``--context``, which wins over ``defaults.context``."""

    def __init__(
        self,
        kubeconfig: str | None,
        context: str | None,
        cache: AccessCache | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.cache = cache or AccessCache()

    def key(self, spec: ForwardSpec) -> Key:
        return (self.kubeconfig, chosen_context(spec, self.context))

    async def __call__(self, spec: ForwardSpec) -> ClusterAccess:
        return await self.cache.get(*self.key(spec))

    def invalidate(self, spec: ForwardSpec, failed: ClusterAccess | None = None) -> None:
        self.cache.invalidate(*self.key(spec), failed)
