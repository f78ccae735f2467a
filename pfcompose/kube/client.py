"""A small JSON client for the Kubernetes REST API: HTTP/1.1 with h11 on trio.

One connection per call. Resolution makes a handful of GETs per (re)connect, so
connection reuse buys nothing, while a fresh connection per call survives API
server restarts and credential changes without any pool bookkeeping.

Errors come in two kinds, both one line:

* :class:`KubeApiError` — the server answered with a non-2xx status; ``message`` is
  the Kubernetes ``Status.message`` (``pods "x" not found``) when the body is one.
* :class:`KubeConnectionError` — no usable answer: refused, unreachable, TLS
  failure, timeout, a malformed or truncated response.
"""

from __future__ import annotations

import errno
import json
import math
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlencode

import h11
import trio

from pfcompose.kube.access import ClusterAccess
from pfcompose.wire.endpoint import Endpoint, open_transport
from pfcompose.wire.proxy import ProxyError

__all__ = ["KubeApiError", "KubeClient", "KubeConnectionError"]

MAX_BODY = 64 * 1024 * 1024
"""Largest response body accepted (a big PodList is a few MiB)."""
MAX_WATCH_LINE = 16 * 1024 * 1024
RECEIVE_SIZE = 65536
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class KubeApiError(Exception):
    """The API server answered a request with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        """``Status.reason`` (``NotFound``, ``Forbidden``…) or the HTTP reason phrase."""
        self.message = message

    @property
    def retryable(self) -> bool:
        """Worth trying again later: throttling or a server-side failure."""
        return self.status in RETRYABLE_STATUS

    def __repr__(self) -> str:
        return f"KubeApiError({self.status}, {self.reason!r}, {self.message!r})"


class KubeConnectionError(Exception):
    """The API server could not be reached or gave no usable HTTP answer."""

    retryable = True


class KubeClient:
    """GET and WATCH JSON resources, one HTTP/1.1 connection per call."""

    def __init__(self, target: ClusterAccess | Endpoint, *, timeout: float = 30.0) -> None:
        if isinstance(target, ClusterAccess):
            self._endpoint = target.endpoint
            self._prefix = target.path_prefix
        else:
            self._endpoint = target
            self._prefix = ""
        self.timeout = timeout
        """Seconds for a whole ``get``, and for a ``watch`` to start answering."""

    @property
    def server(self) -> str:
        return f"{self._endpoint.scheme}://{self._endpoint.host_header}{self._prefix}"

    def __repr__(self) -> str:
        return f"KubeClient({self.server})"

    async def get(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET ``path`` and return the decoded JSON object."""
        return await self._request("GET", path, self._target(path, query))

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path`` (a SelfSubjectAccessReview) and decode the answer."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        return await self._request("POST", path, self._target(path, None), payload)

    async def _request(
        self, method: str, path: str, target: str, payload: bytes | None = None
    ) -> dict[str, Any]:
        """One request on a fresh connection, bounded by ``timeout``; the decoded object."""
        try:
            with trio.fail_after(self.timeout):
                stream = await self._connect()
                try:
                    conn = await self._send_request(stream, target, method, payload)
                    response = await self._read_response(stream, conn)
                    body = await self._read_body(stream, conn)
                finally:
                    await trio.aclose_forcefully(stream)
        except trio.TooSlowError:
            raise KubeConnectionError(
                f"{method} {path}: no answer from {self.server} within {self.timeout:g}s"
            ) from None
        if not 200 <= response.status_code < 300:
            raise _api_error(response, body)
        return _decode_object(body, path)

    async def watch(
        self,
        path: str,
        query: Mapping[str, str] | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """WATCH ``path``: yield each event object (``{"type": …, "object": …}``).

        ``watch=true`` is added to ``query`` unless present. Ends when the server
        ends the stream (as it does after ``timeoutSeconds``); an ``ERROR`` event
        raises :class:`KubeApiError`. ``idle_timeout`` bounds the wait for each
        chunk. Use it inside ``contextlib.aclosing`` so the connection is closed
        as soon as the caller stops iterating.
        """
        params = dict(query or {})
        params.setdefault("watch", "true")
        target = self._target(path, params)
        stream: trio.abc.Stream | None = None
        try:
            try:
                with trio.fail_after(self.timeout):
                    stream = await self._connect()
                    conn = await self._send_request(stream, target)
                    response = await self._read_response(stream, conn)
                    if not 200 <= response.status_code < 300:
                        raise _api_error(response, await self._read_body(stream, conn))
            except trio.TooSlowError:
                raise KubeConnectionError(
                    f"WATCH {path}: no answer from {self.server} within {self.timeout:g}s"
                ) from None
            lines = _LineSplitter()
            while True:
                try:
                    with trio.fail_after(math.inf if idle_timeout is None else idle_timeout):
                        event = await self._next_event(stream, conn)
                except trio.TooSlowError:
                    raise KubeConnectionError(
                        f"WATCH {path}: {self.server} sent nothing for {idle_timeout:g}s"
                    ) from None
                if isinstance(event, h11.Data):
                    objects = lines.feed(bytes(event.data), path)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    objects = lines.finish(path)
                else:  # pragma: no cover - h11 gives nothing else after a response
                    objects = []
                for obj in objects:
                    if obj.get("type") == "ERROR":
                        raise _status_error(obj.get("object"), 500, "Internal Server Error")
                    yield obj
                if not isinstance(event, h11.Data):
                    return
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    # --- HTTP plumbing ---------------------------------------------------------------

    def _target(self, path: str, query: Mapping[str, str] | None) -> str:
        target = self._prefix + path
        if query:
            target += "?" + urlencode(list(query.items()))
        return target

    async def _connect(self) -> trio.abc.Stream:
        try:
            return await open_transport(self._endpoint)
        except trio.TooSlowError:
            raise KubeConnectionError(f"cannot reach {self.server}: connection timed out") from None
        except ProxyError as exc:
            raise KubeConnectionError(str(exc)) from None
        except ssl.SSLError as exc:
            raise KubeConnectionError(
                f"TLS handshake with {self.server} failed: {_tls_reason(exc)}"
            ) from None
        except trio.BrokenResourceError as exc:
            reason = _tls_reason(exc.__cause__) if exc.__cause__ else "connection closed"
            raise KubeConnectionError(
                f"TLS handshake with {self.server} failed: {reason}"
            ) from None
        except OSError as exc:
            raise KubeConnectionError(f"cannot reach {self.server}: {_os_reason(exc)}") from None

    async def _send_request(
        self, stream: trio.abc.Stream, target: str, method: str = "GET", body: bytes | None = None
    ) -> h11.Connection:
        ep = self._endpoint
        headers = [
            ("Host", ep.host_header),
            ("User-Agent", ep.user_agent),
            ("Accept", "application/json"),
            *ep.headers,
        ]
        if body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        try:
            await stream.send_all(data or b"")
        except (trio.BrokenResourceError, OSError) as exc:
            raise KubeConnectionError(
                f"connection to {self.server} lost: {_broken_reason(exc)}"
            ) from None
        return conn

    async def _next_event(self, stream: trio.abc.Stream, conn: h11.Connection) -> Any:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise KubeConnectionError(f"bad HTTP response from {self.server}: {exc}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                raise KubeConnectionError(
                    f"connection to {self.server} lost: {_broken_reason(exc)}"
                ) from None
            if not data and conn.their_state is h11.SEND_RESPONSE:
                raise KubeConnectionError(f"{self.server} closed the connection without answering")
            if not data and conn.their_state is h11.SEND_BODY:
                raise KubeConnectionError(f"{self.server} closed the connection mid-response")
            conn.receive_data(bytes(data))

    async def _read_response(self, stream: trio.abc.Stream, conn: h11.Connection) -> h11.Response:
        while True:
            event = await self._next_event(stream, conn)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise KubeConnectionError(f"{self.server} closed the connection without answering")
            # h11.InformationalResponse (100 Continue…): skip

    async def _read_body(self, stream: trio.abc.Stream, conn: h11.Connection) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(stream, conn)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise KubeConnectionError(f"response from {self.server} is too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b"".join(chunks)


class _LineSplitter:
    """Chunked watch body → JSON objects, one per line (chunk boundaries are arbitrary)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes, path: str) -> list[dict[str, Any]]:
        self._buffer += data
        *complete, rest = bytes(self._buffer).split(b"\n")
        if len(rest) > MAX_WATCH_LINE:
            raise KubeConnectionError(f"WATCH {path}: event larger than {MAX_WATCH_LINE} bytes")
        self._buffer = bytearray(rest)
        return [_decode_object(line, path) for line in complete if line.strip()]

    def finish(self, path: str) -> list[dict[str, Any]]:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [_decode_object(rest, path)] if rest.strip() else []


def _decode_object(body: bytes, path: str) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise KubeConnectionError(f"GET {path}: the server sent invalid JSON") from None
    if not isinstance(obj, dict):
        raise KubeConnectionError(f"GET {path}: the server sent JSON that is not an object")
    return obj


def _api_error(response: h11.Response, body: bytes) -> KubeApiError:
    phrase = response.reason.decode("latin-1") or "error"
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        obj = None
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        return _status_error(obj, response.status_code, phrase)
    text = " ".join(body.decode("utf-8", errors="replace").split())
    if len(text) > 200:
        text = text[:200] + "…"
    message = text or f"the server responded with {response.status_code} {phrase}"
    return KubeApiError(response.status_code, phrase, message)


def _status_error(status: Any, code: int, phrase: str) -> KubeApiError:
    """A Kubernetes ``Status`` object → :class:`KubeApiError` (also for watch ERROR events)."""
    if not isinstance(status, dict):
        return KubeApiError(code, phrase, "the server sent an error without a Status")
    if isinstance(status.get("code"), int) and status["code"] > 0:
        code = status["code"]
    reason = str(status.get("reason") or phrase)
    message = " ".join(str(status.get("message") or "").split()) or f"{code} {reason}"
    return KubeApiError(code, reason, message)


def _os_reason(exc: OSError) -> str:
    """``all attempts to connect … failed`` hides the errno in its cause: dig it out."""
    causes: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        causes = list(exc.__cause__.exceptions) + causes
    elif exc.__cause__ is not None:
        causes.insert(0, exc.__cause__)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno:
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused"
            return (cause.strerror or str(cause)).lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


def _broken_reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLError | OSError):
        return _tls_reason(cause)
    return "connection closed"
