"""Sans-IO codec of the kubelet's WebSocket channel protocol (transport C,
docs/wire-protocol.md §5): no trio, no sockets.

``v4.channel.k8s.io`` (and ``""``): each binary message is one channel byte plus
payload. ``v4.base64.channel.k8s.io``: each text message is ``'0'+channel`` plus
the standard base64 of the payload. Port *i* of the request (0-based, duplicates
allowed) owns data channel ``2i`` and error channel ``2i+1``. On open the server
sends, per port, ``[2i, port LE16]`` then ``[2i+1, port LE16]``.

:class:`ChannelCodec` frames, builds the preamble and validates as the kubelet and
the official Python client do; the trio drivers are in :mod:`.channel`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import ProtocolError

CHANNEL_BINARY = "v4.channel.k8s.io"
CHANNEL_BASE64 = "v4.base64.channel.k8s.io"

Role = Literal["client", "server"]


@dataclass(frozen=True)
class PortData:
    """Bytes for port ``index`` (data channel ``2*index``)."""

    index: int
    data: bytes


@dataclass(frozen=True)
class PortError:
    """Error text for port ``index`` (error channel ``2*index+1``), server → client only."""

    index: int
    text: str


@dataclass(frozen=True)
class PortConfirmed:
    """The client saw a correct preamble on ``channel`` for port ``index``."""

    index: int
    channel: int


ChannelEvent = PortData | PortError | PortConfirmed


def port_preamble(channel: int, port: int) -> bytes:
    """``[channel, port & 0xff, port >> 8]``, e.g. ``00 90 1f`` for 8080 on channel 0."""
    return bytes((channel, port & 0xFF, port >> 8))


class ChannelCodec:
    """Framing and channel bookkeeping of one channel-protocol WebSocket, either role."""

    def __init__(
        self, ports: Sequence[int], protocol: str = CHANNEL_BINARY, *, role: Role = "client"
    ) -> None:
        if protocol not in ("", CHANNEL_BINARY, CHANNEL_BASE64):
            raise ValueError(f"unsupported channel protocol {protocol!r}")
        self.ports = tuple(ports)
        self.protocol = protocol
        self.base64 = protocol == CHANNEL_BASE64
        self.role: Role = role
        self._confirmed = [False] * (2 * len(self.ports))

    @property
    def channels(self) -> int:
        return 2 * len(self.ports)

    def encode(self, channel: int, payload: bytes | bytearray | memoryview) -> bytes | str:
        """One message carrying ``payload`` on ``channel``."""
        parts = self.encode_parts(channel, payload)
        return parts if isinstance(parts, str) else b"".join(parts)

    def encode_parts(
        self, channel: int, payload: bytes | bytearray | memoryview
    ) -> str | list[bytes | bytearray | memoryview]:
        """:meth:`encode` as the buffers of one message, the payload not copied."""
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(payload).decode("ascii")
        return [bytes((channel,)), payload]

    def streamed_index(self, channel: int) -> int | None:
        """The port whose data a binary message on ``channel`` carries, if its pieces
        may be handed on as they arrive (a confirmed data channel); else None."""
        if self.base64 or not 0 <= channel < self.channels or channel % 2:
            return None
        if self.role == "client" and not self._confirmed[channel]:
            return None  # the port preamble: checked whole
        return channel // 2

    def decode(self, message: bytes | str) -> tuple[int, bytes] | None:
        """``(channel, payload)``; None for an empty message or undecodable base64."""
        if not message:
            return None
        if isinstance(message, str):
            channel = ord(message[0]) - ord("0")
            try:
                return channel, base64.b64decode(message[1:], validate=True)
            except (binascii.Error, ValueError):
                return None
        return message[0], message[1:]

    def preamble(self) -> list[bytes | str]:
        """Server: the messages sent first, per port data then error channel."""
        out: list[bytes | str] = []
        for i, port in enumerate(self.ports):
            for channel in (2 * i, 2 * i + 1):
                out.append(self.encode(channel, port_preamble(channel, port)[1:]))
        return out

    def receive(self, message: bytes | str) -> list[ChannelEvent]:
        """Events for one incoming message (role-dependent checks)."""
        if self.role == "server":
            return self._receive_server(message)
        return self._receive_client(message)

    def _receive_server(self, message: bytes | str) -> list[ChannelEvent]:
        # kubelet: ignore empty / undecodable messages, unknown channels, and
        # anything written to an error channel (write-only for the server).
        decoded = self.decode(message)
        if decoded is None:
            return []
        channel, payload = decoded
        if channel < 0 or channel >= self.channels or channel % 2:
            return []
        return [PortData(channel // 2, payload)]

    def _receive_client(self, message: bytes | str) -> list[ChannelEvent]:
        if not message:
            return []
        decoded = self.decode(message)
        if decoded is None:
            raise ProtocolError("invalid base64 in a channel message")
        channel, payload = decoded
        if channel < 0 or channel >= self.channels:
            raise ProtocolError(f"unexpected channel {channel}")
        index = channel // 2
        if not self._confirmed[channel]:
            if len(payload) != 2:
                raise ProtocolError(
                    f"unexpected initial channel frame data size on channel {channel}"
                )
            port = payload[0] | payload[1] << 8
            if port != self.ports[index]:
                raise ProtocolError(
                    f"unexpected port number in initial channel frame: {port} "
                    f"(channel {channel}, requested {self.ports[index]})"
                )
            self._confirmed[channel] = True
            return [PortConfirmed(index, channel)]
        if not payload:
            return []
        if channel % 2:
            return [PortError(index, payload.decode("utf-8", "replace"))]
        return [PortData(index, payload)]
