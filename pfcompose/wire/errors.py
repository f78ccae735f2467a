"""The errors of the wire layer that the sans-IO cores raise. Each carries the one line a
user should read.

Nothing here imports trio: the protocol cores (``spdy``, ``ws_frames``, ``channel_codec``,
``handshake``) raise these and stay importable without an event loop. Errors that are
also trio stream errors (``trio.BrokenResourceError``) live beside their drivers:
:class:`~pfcompose.wire.session.StreamReset` and
:class:`~pfcompose.wire.session.SessionLost` in ``session.py``,
:class:`~pfcompose.wire.websocket.WebSocketClosed` in ``websocket.py``.
"""

from __future__ import annotations


class WireError(Exception):
    """Base of every error raised by ``pfcompose.wire``."""


class ProtocolError(WireError):
    """The peer broke the protocol; the connection cannot go on (spdystream: reader ends)."""


class StreamOpenTimeout(WireError):
    """The server did not reply to a new stream in time (client-go: ``Timeout occurred``)."""


class UpgradeError(WireError):
    """The server did not switch protocols.

    ``message`` is the Kubernetes ``Status.message`` when the body was one (``pods "x"
    not found``), else the trimmed body. ``upgrade_failure`` says whether kubectl would
    fall back from the WebSocket tunnel to plain SPDY after this error (any non-101 or
    bad handshake; not a transport error). ``proxy`` is the (redacted) proxy the
    answer came back through: a refusal other than 401/403/404 then names it, since
    an inspecting proxy that strips ``Upgrade`` makes the server answer 400 and that
    line is all the user sees of it.
    """

    proxy: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        upgrade_failure: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.upgrade_failure = upgrade_failure

    def __str__(self) -> str:
        if self.proxy is None or self.status in (401, 403, 404):
            return self.message
        return f"{self.message} (through proxy {self.proxy})"
