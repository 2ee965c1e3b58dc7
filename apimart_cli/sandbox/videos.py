"""The sandbox's videos: small MP4 files whose ISO-BMFF structure is whole.

Each is `ftyp`, then `moov` (a movie header and one video track, with the sample
tables that say where each frame lies), then `mdat` with the frames. The
frames are bytes drawn from the prompt, not a real codec's: what a client can
check of a video, and what `apimart` checks, is that structure.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct

FRAME_RATE = 24
TIMESCALE = 1000
VIDEO_CACHE_ENTRIES = 4  # a large video (a benchmark's) is hundreds of MB


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _moov(width: int, height: int, sizes: list[int], first_offset: int) -> bytes:
    frames = len(sizes)
    duration = frames * TIMESCALE // FRAME_RATE
    mvhd = _full_box(
        b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, TIMESCALE, duration),
        struct.pack(">IH", 0x10000, 0x100), b"\0" * 10, _MATRIX, b"\0" * 24,
        struct.pack(">I", 2),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, duration), b"\0" * 8,
        struct.pack(">HHHH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip
    times = struct.pack(">IIII", 0, 0, TIMESCALE, duration)
    mdhd = _full_box(b"mdhd", 0, 0, times, struct.pack(">HH", 0x55C4, 0))
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I", 0), b"vide", b"\0" * 12, b"sandbox\0")
    entry = _box(
        b"mp4v", b"\0" * 6, struct.pack(">H", 1), b"\0" * 16, struct.pack(">HH", width, height),
        struct.pack(">II", 0x480000, 0x480000), b"\0" * 4, struct.pack(">H", 1), b"\0" * 32,
        struct.pack(">Hh", 0x18, -1),
    )  # fmt: skip
    stsd = _full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry)
    stts = _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, TIMESCALE // FRAME_RATE))
    stsc = _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1))
    table = struct.pack(f">{frames}I", *sizes)
    stsz = _full_box(b"stsz", 0, 0, struct.pack(">II", 0, frames), table)
    stco = _full_box(b"stco", 0, 0, struct.pack(">II", 1, first_offset))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    minf = _box(
        b"minf", _full_box(b"vmhd", 0, 1, b"\0" * 8), dinf,
        _box(b"stbl", stsd, stts, stsc, stsz, stco),
    )  # fmt: skip
    return _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))


def mp4_video(width: int, height: int, seconds: float, seed: str, size: int | None = None) -> bytes:
    """An MP4 of `seconds` at FRAME_RATE, its frames drawn from `seed`; about `size`
    bytes in all where given (the frames padded to it), else a few KiB a second."""
    frames = max(1, round(seconds * FRAME_RATE))
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isommp41")
    frame = max(16, ((size or 0) - 4096) // frames) if size else 64
    sizes = [frame] * frames
    digest = hashlib.sha256(seed.encode()).digest()
    payload = random.Random(digest).randbytes(frame) * frames
    # The moov's length does not depend on where the frames start: measure it once.
    moov_length = len(_moov(width, height, sizes, 0))
    first_offset = len(ftyp) + moov_length + 8
    return ftyp + _moov(width, height, sizes, first_offset) + _box(b"mdat", payload)


@functools.lru_cache(maxsize=VIDEO_CACHE_ENTRIES)
def cached_video(
    width: int, height: int, seconds: float, seed: str, size: int | None = None, version: int = 0
) -> bytes:
    """A task's video, made once; each `version` another one (a video that changed)."""
    return mp4_video(width, height, seconds, seed if not version else f"{seed}:v{version}", size)
