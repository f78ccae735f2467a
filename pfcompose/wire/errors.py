"""The errors of the wire layer. Each carries the one line a user should read."""

from __future__ import annotations

import trio


class WireError(Exception):
    """Base of every error raised by ``pfcompose.wire``."""


class ProtocolError(WireError):
    """The peer broke the protocol; the connection cannot go on (spdystream: reader ends)."""


class StreamReset(WireError, trio.BrokenResourceError):
    """The peer reset the stream (RST_STREAM). ``status`` is the SPDY status code."""

    def __init__(self, message: str = "stream reset by peer", status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SessionLost(WireError, trio.BrokenResourceError):
    """The session under a stream ended: GOAWAY, EOF, transport error or ping timeout."""


class StreamOpenTimeout(WireError):
    """The server did not reply to a new stream in time (client-go: ``Timeout occurred``)."""


class UpgradeError(WireError):
    """The server did not switch protocols.

    ``message`` is the Kubernetes ``Status.message`` when the body was one (``pods "x"
    not found``), else the trimmed body. ``upgrade_failure`` says whether kubectl would
    fall back from the WebSocket tunnel to plain SPDY after this error (any non-101 or
    bad handshake; not a transport error).
    """

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
