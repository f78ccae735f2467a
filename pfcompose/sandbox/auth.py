"""Authentication for the sandbox API server, checked before anything else (upgrades too).

A real kube-apiserver authenticates every request — a port-forward upgrade included
— before it authorizes it or proxies anything to a kubelet; a bad or expired
credential gets ``401`` with a ``Status`` body (``reason: Unauthorized``), which is
what kubectl prints as ``error: You must be logged in to the server (Unauthorized)``.

The sandbox accepts a static bearer token (``--token``) and, when ``token_ttl`` is
set, short-lived tokens it mints itself (``POST /_sandbox/tokens``; the
exec plugin :mod:`pfcompose.sandbox.execplugin` fetches them). A minted token is
refused once it has expired. Every request's ``Host`` and ``Impersonate-*``
headers are recorded (bounded), so tests can compare what kubectl and pfcompose send.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Authenticator", "Seen"]

SEEN_LIMIT = 2000
"""Requests remembered for ``GET /_sandbox/auth`` (the oldest are forgotten)."""

MINTED_LIMIT = 10000
"""Minted tokens remembered (a benchmark mints one every few seconds)."""


@dataclass(frozen=True)
class Seen:
    """What one request carried that tests compare with kubectl's (no credentials)."""

    method: str
    target: str
    host: str
    upgrade: bool
    impersonate: tuple[tuple[str, str], ...]
    outcome: str  # "ok", "expired", "invalid", "missing"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "target": self.target,
            "host": self.host,
            "upgrade": self.upgrade,
            "impersonate": [list(h) for h in self.impersonate],
            "outcome": self.outcome,
        }


@dataclass
class Authenticator:
    """Decides whether a request's credential is valid now; counts and records."""

    static_token: Callable[[], str | None]
    """The ``--token`` (read on every request: tests change ``Sandbox.token``)."""
    token_ttl: float | None = None
    """Seconds a minted token lives; None: minting is off (only the static token)."""
    clock: Callable[[], float] = time.time
    mints: int = 0
    rejected: int = 0
    expired_rejected: int = 0
    seen: deque[Seen] = field(default_factory=lambda: deque(maxlen=SEEN_LIMIT))
    _minted: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def enabled(self) -> bool:
        return self.static_token() is not None or self.token_ttl is not None

    def mint(self, ttl: float | None = None) -> dict[str, Any]:
        """A new token and its expiry (``expirationTimestamp``, RFC 3339, as exec plugins
        report it). ``ttl`` overrides the sandbox's ``token_ttl`` for this one."""
        lifetime = ttl if ttl is not None else (self.token_ttl or 3600.0)
        token = "sbx-" + secrets.token_urlsafe(18)
        expires = self.clock() + lifetime
        if len(self._minted) >= MINTED_LIMIT:
            now = self.clock()
            self._minted = {t: e for t, e in self._minted.items() if e > now}
        self._minted[token] = expires
        self.mints += 1
        stamp = datetime.fromtimestamp(expires, UTC).isoformat(timespec="milliseconds")
        return {
            "token": token,
            "expirationTimestamp": stamp.replace("+00:00", "Z"),
            "ttl": lifetime,
        }

    def check(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        raw_headers: Sequence[tuple[str, str]],
        upgrade: bool,
    ) -> str:
        """``ok`` or why the credential is refused (``missing``/``invalid``/``expired``);
        the request is recorded either way."""
        outcome = self._outcome(headers.get("authorization", ""))
        impersonate = tuple((k, v) for k, v in raw_headers if k.lower().startswith("impersonate-"))
        self.seen.append(
            Seen(method, target, headers.get("host", ""), upgrade, impersonate, outcome)
        )
        if outcome != "ok":
            self.rejected += 1
            if outcome == "expired":
                self.expired_rejected += 1
        return outcome

    def _outcome(self, authorization: str) -> str:
        if not self.enabled:
            return "ok"
        scheme, _, token = authorization.partition(" ")
        if not token or scheme.lower() != "bearer":
            return "missing"
        static = self.static_token()
        if static is not None and secrets.compare_digest(token, static):
            return "ok"
        expires = self._minted.get(token)
        if expires is None:
            return "invalid"
        return "ok" if self.clock() < expires else "expired"

    def describe(self) -> dict[str, Any]:
        """Admin ``GET /_sandbox/auth``: counters and the recorded requests."""
        return {
            "enabled": self.enabled,
            "tokenTTL": self.token_ttl,
            "mints": self.mints,
            "rejected": self.rejected,
            "expiredRejected": self.expired_rejected,
            "requests": [s.to_json() for s in self.seen],
        }
