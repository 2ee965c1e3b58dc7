"""The sandbox's images: real PNGs, made quickly, and the broken ones its faults serve."""

from __future__ import annotations

import functools
import hashlib
import random
import struct
import zlib

from apimart_cli.images import PNG_SIGNATURE, png_chunk

# PNG: a low zlib level keeps a 4k image well under a second to make.
PNG_ZLIB_LEVEL = 1
IMAGE_CACHE_ENTRIES = 16  # a 4k noise image is 25 MB


def encode_png(width: int, height: int, scanlines: bytes, level: int = PNG_ZLIB_LEVEL) -> bytes:
    """A PNG (8-bit RGB) from raw scanlines, each a filter byte then width * 3 bytes."""

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(scanlines, level))
        + png_chunk(b"IEND", b"")
    )


def gradient_png(width: int, height: int, prompt: str, index: int) -> bytes:
    """A left-to-right gradient in two colours drawn from the prompt, shifted by index."""
    digest = hashlib.sha256(prompt.encode()).digest()
    start = [(value + 24 * index) % 256 for value in digest[0:3]]
    end = list(digest[3:6])
    span = max(width - 1, 1)
    row = bytearray()
    for x in range(width):
        row.extend(a + (b - a) * x // span for a, b in zip(start, end, strict=True))
    return encode_png(width, height, (b"\x00" + bytes(row)) * height)


def noise_png(width: int, height: int, rng: random.Random) -> bytes:
    """Random pixels, stored uncompressed: as large as an image of this size gets."""
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))
    return encode_png(width, height, rows, level=0)


@functools.lru_cache(maxsize=IMAGE_CACHE_ENTRIES)
def cached_image(
    width: int, height: int, prompt: str, index: int, noise_seed: str | None, version: int = 0
) -> bytes:
    """A task's image, made once: a gradient, or random pixels seeded by `noise_seed`.

    Each `version` is another picture of the same size (an image that changed on the host).
    """
    if noise_seed is not None:
        seed = noise_seed if not version else f"{noise_seed}:v{version}"
        return noise_png(width, height, random.Random(seed))
    return gradient_png(width, height, prompt if not version else f"{prompt}\0v{version}", index)


def garbage_after_signature(length: int, seed: str) -> bytes:
    """`length` bytes that start like a PNG and are nothing after its signature."""
    rng = random.Random(seed)
    return PNG_SIGNATURE + rng.randbytes(max(0, length - len(PNG_SIGNATURE)))


def gzip_encoded(data: bytes) -> bytes:
    """The body a host sends with `Content-Encoding: gzip`."""
    import gzip  # only the gzip fault needs it

    return gzip.compress(data, compresslevel=1)
