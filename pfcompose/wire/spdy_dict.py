"""The SPDY/3 header-compression dictionary (docs/wire-protocol.md §6.5.1).

Every header block on a SPDY/3 connection is deflated against this preset
dictionary; a peer that uses any other (e.g. SPDY/2's) cannot inflate our first
block. It is built the way ``spdy/dictionary.go`` lays it out: 65 words, each
prefixed by its u32 big-endian length, then a 574-byte raw tail.
"""

from __future__ import annotations

import struct
from typing import Final

_WORDS: Final = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)  # fmt: skip

_TAIL: Final = (
    b"1001012012022052063003023033043053063074024054064074084094104114124134"
    b"14415416417502504505203 Non-Authoritative Information204 No Content301"
    b" Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not "
    b"Found500 Internal Server Error501 Not Implemented503 Service Unavailab"
    b"leJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, "
    b"Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,imag"
    b"e/gif,application/xml,application/xhtml+xml,text/plain,text/javascript"
    b",publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1"
    b",utf-,*,enq=0."
)

SPDY3_DICT: Final[bytes] = (
    b"".join(struct.pack(">I", len(w)) + w.encode("ascii") for w in _WORDS) + _TAIL
)
"""1423 bytes; adler32 ``0xE3C6A7C2`` (the DICTID in every SPDY/3 zlib header)."""

SPDY3_DICT_ADLER32: Final = 0xE3C6A7C2
SPDY3_DICT_SHA256: Final = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
