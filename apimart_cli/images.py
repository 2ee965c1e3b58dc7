"""Image formats, told from a file's own bytes rather than its name: types,
signatures, dimensions, and PNG's chunks (encoded, walked, checked)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import IO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where a PNG's IHDR chunk ends (the signature, then its length, type, 13 bytes of data
# and CRC), the first place another chunk may go.
IHDR_END = len(PNG_SIGNATURE) + 4 + 4 + 13 + 4

# The reference types the API accepts, and the extension each is saved under.
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}

# Enough of a file's head to tell its type and, for all four types, its size
# (a JPEG's frame header can sit behind large metadata; past this we give up).
SNIFF_BYTES = 64 * 1024


def sniff_mime(head: bytes) -> str | None:
    """The MIME type of PNG, JPEG, WebP or GIF data from its first bytes, else None."""
    if head.startswith(PNG_SIGNATURE):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


# Videos: told from their own bytes too, and saved under the extension those bytes
# say (the host's content type is often a generic one).
VIDEO_EXTENSIONS = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
}
# Content types a video host may label a video with; its bytes then say what it is.
VIDEO_CONTENT_TYPES = frozenset(
    {*VIDEO_EXTENSIONS, "application/octet-stream", "binary/octet-stream"}
)
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def sniff_video(head: bytes) -> str | None:
    """The MIME type of an ISO-BMFF (MP4, QuickTime) or EBML (WebM, Matroska) file
    from its first bytes, else None. QuickTime and Matroska are told by the brand
    and the DocType their headers name."""
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(_EBML_MAGIC):
        return "video/x-matroska" if b"matroska" in head[:64] else "video/webm"
    return None


def media_extension(head: bytes) -> str | None:
    """The extension of an image or a video, from its first bytes."""
    mime = sniff_mime(head)
    if mime is not None:
        return EXTENSIONS[mime]
    video = sniff_video(head)
    return None if video is None else VIDEO_EXTENSIONS[video]


def extension_for(content_type: str | None) -> str | None:
    """The file extension for a `Content-Type` header value, if it is an image type."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get("image/jpeg" if mime == "image/jpg" else mime)


def image_dimensions(head: bytes) -> tuple[int, int] | None:
    """Width and height read from an image's header, or None where it cannot be read."""
    try:
        mime = sniff_mime(head)
        if mime == "image/png":
            return png_dimensions(head)
        if mime == "image/gif":
            width, height = struct.unpack("<HH", head[6:10])
            return width, height
        if mime == "image/webp":
            return _webp_dimensions(head)
        if mime == "image/jpeg":
            return _jpeg_dimensions(head)
    except struct.error:
        return None
    return None


def png_dimensions(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's first 24 bytes, or None if it is not a PNG."""
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width and height else None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    # The length checks: a head cut short must not yield a made-up size.
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20:21] == b"\x2f" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


# JPEG start-of-frame markers (baseline, progressive, ...), which carry the size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(head: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 <= len(head):
        if head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        (length,) = struct.unpack(">H", head[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", head[offset + 5 : offset + 9])
            return width, height
        offset += 2 + length
    return None


# --- PNG: a signature, then chunks of length, type, data and CRC-32; IHDR first -------


def png_chunk(chunk_type: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type and data."""
    crc = zlib.crc32(chunk_type + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


def is_whole_png_chunk(data: bytes) -> bool:
    """Whether `data` is exactly one PNG chunk, its length and CRC-32 agreeing."""
    if len(data) < 12:
        return False
    length = int.from_bytes(data[:4], "big")
    crc = int.from_bytes(data[-4:], "big")
    return length == len(data) - 12 and zlib.crc32(data[4:-4]) & 0xFFFFFFFF == crc


def is_png_head(head: bytes) -> bool:
    """Whether `head` (the first IHDR_END bytes) is a PNG's signature and whole IHDR,
    the place a chunk of the tool's own goes right after."""
    return (
        len(head) >= IHDR_END
        and head.startswith(PNG_SIGNATURE)
        and head[12:16] == b"IHDR"
        and struct.unpack(">I", head[8:12])[0] == 13
    )


def png_chunks(handle: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each chunk's type and length, from a handle just past the PNG's signature; the
    handle is left at the chunk's data (the walk goes on from there, whatever was read)."""
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return
        length, chunk_type = struct.unpack(">I4s", header)
        position = handle.tell()
        yield chunk_type, length
        if chunk_type == b"IEND":
            return
        handle.seek(position + length + 4)  # past the data and the CRC
