"""Image types and sizes told from bytes; extensions from content types."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.images import (
    IHDR_END,
    PNG_SIGNATURE,
    extension_for,
    image_dimensions,
    is_png_head,
    is_whole_png_chunk,
    png_chunk,
    png_chunks,
    png_dimensions,
    sniff_mime,
)
from apimart_cli.sandbox import gradient_png
from tests.helpers.images import png_head


def gif(width: int, height: int, version: bytes = b"89a") -> bytes:
    return b"GIF" + version + struct.pack("<HH", width, height) + b"\x80\x00\x00"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, *, sof: int = 0xC0, before: bytes = b"") -> bytes:
    app0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    frame = _segment(sof, struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00" * 3)
    return b"\xff\xd8" + app0 + before + frame + b"\xff\xda"


def riff(chunk: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", len(chunk) + 4) + b"WEBP" + chunk


def webp_vp8x(width: int, height: int) -> bytes:
    payload = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    payload += (height - 1).to_bytes(3, "little")
    return riff(b"VP8X" + struct.pack("<I", len(payload)) + payload)


def webp_vp8(width: int, height: int) -> bytes:
    payload = b"\x50\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return riff(b"VP8 " + struct.pack("<I", len(payload)) + payload)


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    payload = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 4
    return riff(b"VP8L" + struct.pack("<I", len(payload)) + payload)


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (png_head(1, 1), "image/png"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (jpeg(1, 1), "image/jpeg"),
        (b"\xff\xd8\xff\xe1\x00\x10Exif", "image/jpeg"),
        (webp_vp8x(1, 1), "image/webp"),
        (webp_vp8l(1, 1), "image/webp"),
        (gif(1, 1), "image/gif"),
        (gif(1, 1, b"87a"), "image/gif"),
        (b"", None),
        (b"\x89PNG", None),
        (b"\x89PNG\r\n\x1a", None),
        (b"\xff\xd8", None),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"RIFF\x00\x00\x00\x00WEB", None),
        (b"GIF88a", None),
        (b"<!DOCTYPE html><html>", None),
        (b'{"error": "nope"}', None),
        (b"BM\x00\x00", None),  # BMP: not a type the API takes
        (b"\x00\x00\x00\x0cjP  ", None),  # JPEG 2000
        (b"x" * 64, None),
    ],
)
def test_sniff_mime(head: bytes, mime: str | None) -> None:
    assert sniff_mime(head) == mime


@pytest.mark.parametrize(
    ("head", "size"),
    [
        (png_head(1, 1), (1, 1)),
        (png_head(1881, 836), (1881, 836)),
        (png_head(3840, 2160), (3840, 2160)),
        (gif(1, 1), (1, 1)),
        (gif(640, 480, b"87a"), (640, 480)),
        (jpeg(1536, 864), (1536, 864)),
        (jpeg(2, 3, sof=0xC2), (2, 3)),  # progressive
        (jpeg(800, 600, sof=0xC1), (800, 600)),
        # An APP1 (Exif) segment before the frame header.
        (jpeg(1024, 768, before=_segment(0xE1, b"Exif\x00\x00" + b"\x00" * 2000)), (1024, 768)),
        # A Huffman table (0xC4 is not a frame header) and a quantisation table first.
        (
            jpeg(300, 200, before=_segment(0xC4, b"\x00" * 20) + _segment(0xDB, b"\x00" * 65)),
            (300, 200),
        ),
        # Fill bytes before a marker.
        (jpeg(5, 7, before=b"\xff\xff"), (5, 7)),
        (webp_vp8x(1, 1), (1, 1)),
        (webp_vp8x(3840, 2160), (3840, 2160)),
        (webp_vp8x(16384, 1), (16384, 1)),
        (webp_vp8(1536, 864), (1536, 864)),
        (webp_vp8(16383, 2), (16383, 2)),
        (webp_vp8l(1, 1), (1, 1)),
        (webp_vp8l(1024, 768), (1024, 768)),
        (webp_vp8l(16384, 16384), (16384, 16384)),
    ],
)
def test_image_dimensions(head: bytes, size: tuple[int, int]) -> None:
    assert image_dimensions(head) == size


def test_image_dimensions_ignores_the_vp8_scale_bits() -> None:
    head = bytearray(webp_vp8(100, 50))
    head[27] |= 0xC0  # the top two bits of the width are a scale factor
    head[29] |= 0x40
    assert image_dimensions(bytes(head)) == (100, 50)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"not an image at all",
        png_head(10, 10)[:20],
        png_head(10, 10)[:8] + b"\x00\x00\x00\x0dIDAT" + b"\x00" * 13,  # no IHDR first
        gif(10, 10)[:8],
        jpeg(10, 10)[:27],  # cut inside the frame header
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # no frame header
        b"\xff\xd8\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # not a marker
        webp_vp8x(10, 10)[:26],
        webp_vp8(10, 10)[:28],
        webp_vp8l(10, 10)[:23],
        riff(b"VP8 " + b"\x00" * 20),  # no VP8 start code
        riff(b"VP8L" + b"\x00" * 10),  # no VP8L signature
        riff(b"ALPH" + b"\x00" * 30),  # an unknown first chunk
    ],
)
def test_image_dimensions_unreadable(head: bytes) -> None:
    assert image_dimensions(head) is None


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/png", ".png"),
        ("image/png; charset=x", ".png"),
        ("image/png ; foo=bar", ".png"),
        (" image/png", ".png"),
        ("IMAGE/JPEG", ".jpg"),
        ("image/jpeg", ".jpg"),
        ("image/jpg", ".jpg"),
        ("Image/JPG; q=1", ".jpg"),
        ("image/webp", ".webp"),
        ("image/gif", ".gif"),
        ("image/svg+xml", None),
        ("image/bmp", None),
        ("image/", None),
        ("text/html", None),
        ("text/html; charset=utf-8", None),
        ("application/octet-stream", None),
        ("application/json", None),
        ("", None),
        (None, None),
    ],
)
def test_extension_for(content_type: str | None, extension: str | None) -> None:
    assert extension_for(content_type) == extension


@given(st.binary(max_size=64))
def test_sniff_mime_is_one_of_four_types_or_none(data: bytes) -> None:
    assert sniff_mime(data) in {None, "image/png", "image/jpeg", "image/webp", "image/gif"}


@given(st.binary(max_size=64))
def test_sniff_mime_goes_by_the_signature_whatever_follows(tail: bytes) -> None:
    assert sniff_mime(b"\x89PNG\r\n\x1a\n" + tail) == "image/png"
    assert sniff_mime(b"GIF89a" + tail) == "image/gif"
    assert sniff_mime(b"\xff\xd8\xff" + tail) == "image/jpeg"


@given(st.binary(max_size=200))
def test_image_dimensions_never_raise(data: bytes) -> None:
    dimensions = image_dimensions(data)
    assert dimensions is None or all(side >= 0 for side in dimensions)


# --- PNG: dimensions, chunks encoded, checked and walked ----------------------------


def test_png_dimensions_from_the_header() -> None:
    assert png_dimensions(gradient_png(300, 200, "x", 0)[:24]) == (300, 200)
    assert png_dimensions(png_head(0, 10)) is None  # no picture to keep the proportions of
    assert png_dimensions(b"\xff\xd8\xff" + b"\x00" * 21) is None
    assert png_dimensions(png_head(5, 6)[:23]) is None
    assert png_dimensions(b"") is None


def test_a_png_chunk_is_whole_only_with_its_length_and_crc() -> None:
    chunk = png_chunk(b"tEXt", b"Comment\x00hello")
    assert chunk[4:8] == b"tEXt" and len(chunk) == 12 + len(b"Comment\x00hello")
    assert is_whole_png_chunk(chunk)
    assert is_whole_png_chunk(png_chunk(b"IEND", b""))
    assert not is_whole_png_chunk(chunk[:-1])
    assert not is_whole_png_chunk(chunk[:-1] + bytes([chunk[-1] ^ 1]))  # its CRC
    assert not is_whole_png_chunk(chunk[:8] + b"c" + chunk[9:])  # its data
    assert not is_whole_png_chunk(b"")


def test_a_png_head_is_its_signature_and_a_whole_ihdr() -> None:
    whole = gradient_png(8, 8, "x", 0)
    assert is_png_head(whole[:IHDR_END])
    assert not is_png_head(whole[: IHDR_END - 1])
    assert not is_png_head(b"\x00" + whole[1:IHDR_END])
    assert not is_png_head(whole[:8] + b"\x00\x00\x00\x0c" + whole[12:IHDR_END])


def test_png_chunks_walks_every_chunk_to_iend_from_past_the_signature() -> None:
    data = gradient_png(4, 4, "x", 0)
    marked = data[:IHDR_END] + png_chunk(b"iTXt", b"k\x00\x00\x00\x00\x00v") + data[IHDR_END:]
    handle = io.BytesIO(marked + b"trailing bytes after IEND")
    assert handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    walked = [(kind, length, handle.read(length)) for kind, length in png_chunks(handle)]
    assert [kind for kind, _, _ in walked] == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    assert walked[1][2] == b"k\x00\x00\x00\x00\x00v"
    assert all(len(data) == length for _, length, data in walked)


def test_png_chunks_stops_where_the_file_is_cut() -> None:
    data = gradient_png(4, 4, "x", 0)
    handle = io.BytesIO(data[: IHDR_END + 5])
    handle.read(len(PNG_SIGNATURE))
    assert [kind for kind, _ in png_chunks(handle)] == [b"IHDR"]


def test_png_is_known_in_one_module() -> None:
    """The signature and the chunk's CRC are images.py's alone: every other module asks it."""
    package = Path(__file__).resolve().parent.parent / "apimart_cli"
    knowing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(mark in path.read_text(encoding="utf-8") for mark in (r"\x89PNG", "zlib.crc32"))
    )
    assert knowing == ["images.py"]
