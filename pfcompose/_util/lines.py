"""One sans-IO line splitter: bytes in, complete ``\\n``-terminated lines out.

Every reader of newline-delimited data (watch bodies, the control socket, a child
process's output) is a thin async loop around :class:`LineSplitter`, so the bound
on a line and the handling of a partial last line are written once. Lines end at
``\\n`` only; a ``\\r`` before it stays in the line (none of the readers needs CRLF:
their lines are JSON or plain log text).
"""

from __future__ import annotations


class LineTooLongError(ValueError):
    """A line (complete or still pending) is longer than the splitter's bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"line longer than {limit} bytes")
        self.limit = limit


class LineSplitter:
    """Split a byte stream into lines, each at most ``max_line`` bytes (newline excluded).

    :meth:`feed` returns the lines the data completes and keeps the rest;
    :meth:`finish` returns that rest at end of input. Data is scanned once: a long line
    arriving in many small pieces costs linear, not quadratic, time.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of the incomplete last line held so far."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The lines ``data`` completes (without their ``\\n``), in order.

        Raises :class:`LineTooLongError` when a line, or the pending rest, exceeds the
        bound; the splitter is then unusable (the stream has lost its framing).
        """
        buf = self._buffer
        search = len(buf)  # the pending rest holds no newline: scan only the new bytes
        buf += data
        lines: list[bytes] = []
        start = 0
        while (end := buf.find(b"\n", search)) >= 0:
            if end - start > self._max:
                raise LineTooLongError(self._max)
            lines.append(bytes(buf[start:end]))
            start = search = end + 1
        if start:
            del buf[:start]
        if len(buf) > self._max:
            raise LineTooLongError(self._max)
        return lines

    def finish(self) -> bytes:
        """End of input: the unterminated last line (``b""`` if none); the splitter is reset."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
