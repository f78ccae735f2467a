"""The WebSocket fast path frames exactly what wsproto would accept and produce."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from pfcompose.wire import masking
from pfcompose.wire.masking import mask_in_place
from pfcompose.wire.ws_frames import Buffer, binary_frame_parts


def encode_binary_frame(payload: Buffer | list[Buffer], *, mask: bool) -> bytes:
    """One frame as the bytes on the wire (the parts of one gathered write, joined)."""
    parts = [payload] if isinstance(payload, bytes | bytearray | memoryview) else payload
    return b"".join(binary_frame_parts(parts, mask=mask))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 262147])
@pytest.mark.parametrize("mask", [True, False])
def test_encoded_frame_decodes_in_wsproto(size: int, mask: bool) -> None:
    payload = bytes(i * 7 % 256 for i in range(size))
    frame = encode_binary_frame(memoryview(payload), mask=mask)
    peer = Connection(ConnectionType.SERVER if mask else ConnectionType.CLIENT)
    peer.receive_data(bytes(frame))
    events = list(peer.events())
    data = b"".join(bytes(e.data) for e in events if isinstance(e, BytesMessage))
    assert data == payload
    assert all(isinstance(e, BytesMessage) for e in events)
    header = 2 + (2 if 126 <= size <= 65535 else 8 if size > 65535 else 0) + (4 if mask else 0)
    assert len(frame) == header + size
    assert frame[0] == 0x82 and bool(frame[1] & 0x80) is mask


@pytest.mark.parametrize("size", [1, 4, 1000, 65536])
def test_multi_part_frames_continue_the_key_across_parts(size: int) -> None:
    rng = random.Random(size)
    parts = [rng.randbytes(8), rng.randbytes(size), rng.randbytes(3), rng.randbytes(size + 1)]
    frame = encode_binary_frame(parts, mask=True)
    peer = Connection(ConnectionType.SERVER)
    peer.receive_data(bytes(frame))
    data = b"".join(bytes(e.data) for e in peer.events() if isinstance(e, BytesMessage))
    assert data == b"".join(parts)


def test_the_c_masker_is_used_and_agrees_with_the_python_one() -> None:
    # websockets is a dependency: its compiled apply_mask must be what runs
    assert masking.C_MASK
    rng = random.Random(3)
    for size in (0, 1, 3, 4, 5, 63, 64, 65, 1000, 1 << 16, (1 << 20) + 3):
        data, key = rng.randbytes(size), rng.randbytes(4)
        want = bytes(b ^ key[i % 4] for i, b in enumerate(data)) if size < 5000 else None
        got = masking.masked(memoryview(data), key)
        assert got == masking.python_masked(data, key)
        assert want is None or got == want


def test_the_c_masker_loads_without_the_websockets_package() -> None:
    # websockets/__init__ imports importlib.metadata (+1.6 MiB): the lean runtime must not
    code = ("import sys; from pfcompose.wire import masking; print(masking.C_MASK, "
            "'websockets' in sys.modules, 'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, env={**os.environ, "PFCOMPOSE_PURE_MASK": ""})
    assert out.stdout.split() == ["True", "False", "False"]


def test_mask_matches_rfc_example_and_is_an_involution() -> None:
    # RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d
    buf = bytearray(b"Hello")
    mask_in_place(buf, 0, bytes.fromhex("37fa213d"))
    assert bytes(buf) == bytes.fromhex("7f9f4d5158")
    mask_in_place(buf, 0, bytes.fromhex("37fa213d"))
    assert bytes(buf) == b"Hello"


def test_masking_rotates_like_wsproto_across_chunks() -> None:
    """Our masking of a frame cut in pieces (key rotated per piece) is wsproto's."""
    from wsproto.frame_protocol import XorMaskerSimple

    key = b"\x01\x82\x33\xf4"
    data = bytes(range(256)) * 3
    theirs = XorMaskerSimple(bytearray(key))
    pieces = [data[:5], data[5:6], data[6:300], data[300:]]
    got, offset = b"", 0
    for piece in pieces:
        turn = offset % 4
        got += bytes(masking.masked(piece, key[turn:] + key[:turn]))
        offset += len(piece)
    want = b"".join(bytes(theirs.process(bytearray(p))) for p in pieces)
    assert got == want and got != data


def test_wsproto_is_not_patched() -> None:
    """Importing the WebSocket driver leaves wsproto's masker as wsproto ships it."""
    probe = (
        "import pfcompose.wire.websocket, wsproto.frame_protocol as f;"
        "print(f.XorMaskerSimple.__module__, f.XorMaskerSimple.__qualname__)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wsproto.frame_protocol", "XorMaskerSimple"]
