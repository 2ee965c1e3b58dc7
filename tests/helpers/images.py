"""Image bytes for tests, built here rather than by the code under test."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, kind, payload, CRC."""
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def png_head(width: int, height: int) -> bytes:
    """The signature and the IHDR chunk: all that sniffing a PNG's type and size reads."""
    return PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def png(width: int = 2, height: int = 1) -> bytes:
    """A small, valid PNG (signature, IHDR, one IDAT, IEND), red all over."""
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return png_head(width, height) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_of_size(size: int) -> bytes:
    """`size` bytes that start as a 64x64 PNG and go on with noise (seeded by `size`)."""
    head = png_head(64, 64)
    return head + random.Random(size).randbytes(size - len(head))


def write_png(path: Path, width: int = 32, height: int = 16) -> Path:
    path.write_bytes(png(width, height))
    return path


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks in order (kind, payload), after checking its signature and every CRC."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    offset, found = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, payload = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), f"bad CRC in {kind!r}"
        found.append((kind, payload))
        offset += 12 + length
    return found


def png_size(source: Path | bytes) -> tuple[int, int]:
    """Width and height of a PNG (a file or its bytes), after checking it is one."""
    data = source.read_bytes() if isinstance(source, Path) else source
    assert data[:8] == PNG_SIGNATURE, (
        f"{source if isinstance(source, Path) else 'data'} is not a PNG"
    )
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
