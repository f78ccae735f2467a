"""A small JSON client for the Kubernetes REST API over :mod:`pfcompose.wire.http`.

The HTTP/1.1 exchange (h11, bounds, the watch body's lines) is the one client the
upgrade handshakes use too; this module adds JSON, the Kubernetes error texts and
its timeouts.

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
import ssl
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import h11
import trio

from pfcompose.kube.access import ClusterAccess
from pfcompose.wire import http
from pfcompose.wire.endpoint import Endpoint, open_transport
from pfcompose.wire.errors import ProtocolError
from pfcompose.wire.httpmsg import build_request
from pfcompose.wire.proxy import ProxyError

__all__ = ["KubeApiError", "KubeClient", "KubeConnectionError"]

MAX_BODY = 64 * 1024 * 1024
"""Largest response body accepted (a big PodList is a few MiB)."""
MAX_WATCH_LINE = 16 * 1024 * 1024
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
                    with self._http_errors():
                        conn = await self._send(stream, method, target, payload)
                        response = await self._receive_response(stream, conn)
                        body = await http.read_body(conn, stream, MAX_BODY, strict=True)
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
                    with self._http_errors():
                        conn = await self._send(stream, "GET", target)
                        response = await self._receive_response(stream, conn)
                        if not 200 <= response.status_code < 300:
                            body = await http.read_body(conn, stream, MAX_BODY, strict=True)
                            raise _api_error(response, body)
            except trio.TooSlowError:
                raise KubeConnectionError(
                    f"WATCH {path}: no answer from {self.server} within {self.timeout:g}s"
                ) from None
            lines = http.LineReader(
                conn, stream, max_line=MAX_WATCH_LINE, strict=True, idle_timeout=idle_timeout
            )
            while True:
                try:
                    with self._http_errors():
                        batch = await lines.read_lines()
                except trio.TooSlowError:
                    raise KubeConnectionError(
                        f"WATCH {path}: {self.server} sent nothing for {idle_timeout:g}s"
                    ) from None
                except http.ResponseLineTooLong:
                    raise KubeConnectionError(
                        f"WATCH {path}: event larger than {MAX_WATCH_LINE} bytes"
                    ) from None
                if not batch:
                    return
                for line in batch:
                    if not line.strip():
                        continue
                    obj = _decode_object(line, path)
                    if obj.get("type") == "ERROR":
                        raise _status_error(obj.get("object"), 500, "Internal Server Error")
                    yield obj
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

    async def _send(
        self, stream: trio.abc.Stream, method: str, target: str, body: bytes | None = None
    ) -> h11.Connection:
        """Write the request (``wire/http.py`` builds and sends it); its h11 connection."""
        headers = [("Accept", "application/json")]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        request = build_request(
            self._endpoint,
            method,
            target,
            headers,
            content_length=None if body is None else len(body),
            endpoint_headers_last=True,
        )
        conn = h11.Connection(h11.CLIENT)
        await http.send_request(conn, stream, request, body or b"")
        return conn

    async def _receive_response(
        self, stream: trio.abc.Stream, conn: h11.Connection
    ) -> h11.Response:
        response = await http.receive_response(conn, stream, strict=True)
        if not isinstance(response, h11.Response):  # a 101 to a plain GET
            raise ProtocolError("unexpected 101 Switching Protocols")
        return response

    @contextmanager
    def _http_errors(self) -> Iterator[None]:
        """``wire/http.py``'s errors → :class:`KubeConnectionError` in this client's words."""
        try:
            yield
        except http.PeerClosed as exc:
            if exc.mid_body:
                raise KubeConnectionError(
                    f"{self.server} closed the connection mid-response"
                ) from None
            raise KubeConnectionError(
                f"{self.server} closed the connection without answering"
            ) from None
        except http.BodyTooLarge:
            raise KubeConnectionError(f"response from {self.server} is too large") from None
        except http.MalformedResponse as exc:
            raise KubeConnectionError(
                f"bad HTTP response from {self.server}: {exc.detail}"
            ) from None
        except http.ResponseLineTooLong:
            raise
        except ProtocolError as exc:
            raise KubeConnectionError(f"bad HTTP response from {self.server}: {exc}") from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise KubeConnectionError(
                f"connection to {self.server} lost: {_broken_reason(exc)}"
            ) from None


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
