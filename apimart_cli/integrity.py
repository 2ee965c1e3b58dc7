"""Whether downloaded bytes are a whole image, read from the image's own structure.

A host that announces no length, or a connection that drops without an error,
can leave a file that starts like an image and stops anywhere. Each format says
where it ends: PNG with its IEND chunk (every chunk carrying a CRC), JPEG with
its end-of-image marker, WebP with the length in its RIFF header, GIF with its
trailer byte. `flaw` walks that structure; its header alone is checked where the
length was announced and met.

A video is always walked to its end, announced length or not, since its parts
are stated up front: an ISO-BMFF file (MP4, QuickTime) is top-level boxes whose
sizes add up to the file, with `ftyp` first and `moov` and `mdat` among them; a
WebM or Matroska file is an EBML header and a segment whose size ends with the
file. Only box and element headers are read, so a large file costs a few reads.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from apimart_cli.images import is_whole_png_chunk, sniff_mime, sniff_video

if TYPE_CHECKING:
    from mmap import mmap

# What is checked: the bytes, or a file mapped into memory (indexing gives an int).
Bytes = Union[bytes, "mmap"]


@dataclass(frozen=True)
class Flaw:
    """Why the bytes are not a whole image."""

    reason: str
    short: bool  # the bytes end before the image does: more of them may complete it


def _short(reason: str) -> Flaw:
    return Flaw(reason, short=True)


def _bad(reason: str) -> Flaw:
    return Flaw(reason, short=False)


def flaw(data: Bytes, *, to_the_end: bool) -> Flaw | None:
    """None if `data` is an image (a whole one, with `to_the_end`), else what is wrong."""
    head = _slice(data, 0, 64)
    mime = sniff_mime(head) or sniff_video(head)
    if mime is None:
        return _bad("it does not start like a PNG, JPEG, WebP or GIF image, or a video")
    check = _CHECKS[mime]
    return check(data, to_the_end)


def is_video(head: bytes) -> bool:
    """Whether `head` starts a video this module checks (always to its end)."""
    return sniff_video(head) is not None


def _slice(data: Bytes, start: int, end: int) -> bytes:
    return bytes(data[start:end])


def _be(data: Bytes, start: int, size: int) -> int:
    return int.from_bytes(_slice(data, start, start + size), "big")


def _le(data: Bytes, start: int, size: int) -> int:
    return int.from_bytes(_slice(data, start, start + size), "little")


# --- PNG: chunks of length, type, data, CRC; IHDR first, IEND last ----------------------

_PNG_MAX_CHUNK = 2**31 - 1


def _png(data: Bytes, to_the_end: bool) -> Flaw | None:
    size, at, first = len(data), 8, True
    while True:
        if at + 8 > size:
            return _short("the PNG ends before its IEND chunk")
        length, kind = _be(data, at, 4), _slice(data, at + 4, at + 8)
        if first and (kind != b"IHDR" or length != 13):
            return _bad("the PNG does not start with its IHDR chunk")
        if length > _PNG_MAX_CHUNK or not kind.isalpha():
            return _bad(f"the PNG has a broken chunk at byte {at}")
        end = at + 12 + length
        if end > size:
            return _short(f"the PNG ends inside its {kind.decode()} chunk")
        if not is_whole_png_chunk(_slice(data, at, end)):
            return _bad(f"the PNG's {kind.decode()} chunk at byte {at} fails its CRC")
        if kind == b"IEND" or (first and not to_the_end):
            return None
        at, first = end, False


# --- JPEG: marker segments up to the end-of-image marker -------------------------------

_EOI, _SOS = 0xD9, 0xDA
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and the restart markers


def _jpeg(data: Bytes, to_the_end: bool) -> Flaw | None:
    if not to_the_end:
        return None  # the signature is its header
    size, at = len(data), 2
    while True:
        if at + 2 > size:
            return _short("the JPEG ends before its end-of-image marker")
        if data[at] != 0xFF:
            return _bad(f"the JPEG has no marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == _EOI:
            return None
        elif marker in _STANDALONE:
            at += 2
        else:
            if at + 4 > size:
                return _short("the JPEG ends inside a segment header")
            length = _be(data, at + 2, 2)
            if length < 2:
                return _bad(f"the JPEG has a broken segment at byte {at}")
            at += 2 + length
            if marker == _SOS:
                found = _after_scan(data, at)
                if found is None:
                    return _short("the JPEG ends inside its image data")
                at = found


def _after_scan(data: Bytes, at: int) -> int | None:
    """Where the marker after entropy-coded data starts (0xFF 0x00 and restarts are data)."""
    size = len(data)
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= size:
            return None
        following = data[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            at += 2
        elif following == 0xFF:
            at += 1
        else:
            return at


# --- WebP: a RIFF container that states its own length --------------------------------


def _webp(data: Bytes, to_the_end: bool) -> Flaw | None:
    if len(data) < 16:
        return _short("the WebP ends inside its header")
    if _slice(data, 12, 16) not in (b"VP8 ", b"VP8L", b"VP8X"):
        return _bad("the WebP holds no VP8, VP8L or VP8X chunk")
    expected = 8 + _le(data, 4, 4)
    if to_the_end and len(data) < expected:
        return _short(f"the WebP has {len(data)} of the {expected} bytes its header states")
    return None


# --- GIF: blocks after the screen descriptor, up to the trailer -------------------------

_GIF_TRAILER, _GIF_EXTENSION, _GIF_IMAGE = 0x3B, 0x21, 0x2C


def _colour_table(flags: int) -> int:
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _gif(data: Bytes, to_the_end: bool) -> Flaw | None:
    size = len(data)
    if size < 13:
        return _short("the GIF ends inside its header")
    if not to_the_end:
        return None
    at = 13 + _colour_table(data[10])
    while True:
        if at >= size:
            return _short("the GIF ends before its trailer")
        block = data[at]
        if block == _GIF_TRAILER:
            return None
        if block == _GIF_EXTENSION:
            at += 2
        elif block == _GIF_IMAGE:
            if at + 10 > size:
                return _short("the GIF ends inside an image descriptor")
            at += 10 + _colour_table(data[at + 9]) + 1  # + the LZW minimum code size
        else:
            return _bad(f"the GIF has an unknown block at byte {at}")
        while True:  # data sub-blocks, each led by its length, up to an empty one
            if at >= size:
                return _short("the GIF ends inside a block")
            length = data[at]
            at += 1 + length
            if length == 0:
                break


# --- ISO-BMFF (MP4, QuickTime): top-level boxes that add up to the file ---------------

_BMFF_NEEDED = (b"ftyp", b"moov", b"mdat")
# A video has a handful of top-level boxes (a fragmented one, a few per second), a
# WebM a cluster every few seconds: a file of millions is not one worth walking.
_MAX_PARTS = 1_000_000


def _bmff(data: Bytes, to_the_end: bool) -> Flaw | None:
    size, at, seen = len(data), 0, set()
    moov: tuple[int, int] | None = None  # where its boxes start and where it ends
    runs_to_the_end = False
    for _ in range(_MAX_PARTS):
        if at >= size:
            break
        if at + 8 > size:
            return _short(f"the video ends inside a box header at byte {at}")
        length, kind = _be(data, at, 4), _slice(data, at + 4, at + 8)
        if not all(0x20 <= c <= 0x7E for c in kind):
            return _bad(f"the video has a broken box at byte {at}")
        header = 8
        if length == 1:  # a 64-bit size follows the type
            if at + 16 > size:
                return _short(f"the video ends inside a box header at byte {at}")
            length, header = _be(data, at + 8, 8), 16
        elif length == 0:  # the box runs to the end of the file
            length, runs_to_the_end = size - at, True
        if length < header:
            return _bad(f"the video's {kind.decode()} box at byte {at} states {length} bytes")
        if at == 0 and kind != b"ftyp":
            return _bad("the video does not start with its ftyp box")
        seen.add(kind)
        if kind == b"moov":
            moov = (at + header, at + length)
        if at + length > size:
            return _short(
                f"the video ends inside its {kind.decode()} box ({size} of {at + length} bytes)"
            )
        at += length
    else:
        return _bad(f"the video has more than {_MAX_PARTS} top-level boxes")
    missing = [k.decode() for k in _BMFF_NEEDED if k not in seen]
    if missing:
        # The boxes add up, yet a part is missing: a host that cut the file between
        # boxes, or a file that was never a whole video.
        return _short(f"the video has no {' or '.join(missing)} box")
    if runs_to_the_end and moov is not None:
        # A box of size 0 ends wherever the file does, cut short or not: the sample
        # tables say where the last frame ends.
        end = _samples_end(data, *moov)
        if end is not None and end > size:
            return _short(f"the video ends before its last sample ({size} of {end} bytes)")
    return None


def _boxes(data: Bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """The boxes between `start` and `end` by type: where each one's body starts and
    where it ends. Stops at anything that does not fit."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    at = start
    for _ in range(_MAX_PARTS):
        if at + 8 > end:
            break
        length, kind, header = _be(data, at, 4), _slice(data, at + 4, at + 8), 8
        if length == 1:
            length, header = _be(data, at + 8, 8), 16
        elif length == 0:
            length = end - at
        if length < header or at + length > end:
            break
        found.setdefault(kind, []).append((at + header, at + length))
        at += length
    return found


def _box(data: Bytes, within: tuple[int, int], *path: bytes) -> tuple[int, int] | None:
    for kind in path:
        boxes = _boxes(data, *within).get(kind)
        if not boxes:
            return None
        within = boxes[0]
    return within


# The most samples one track's tables are read for: a day of video at 60 frames a second.
_MAX_SAMPLES = 6_000_000


def _samples_end(data: Bytes, start: int, end: int) -> int | None:
    """Where the last byte of any track's samples lies, from moov's sample tables (the
    chunk offsets, samples per chunk and sample sizes); None where the tables cannot
    be read (a fragmented file's samples live in its moof boxes)."""
    furthest = None
    for trak in _boxes(data, start, end).get(b"trak", []):
        tables = _box(data, trak, b"mdia", b"minf", b"stbl")
        track_end = None if tables is None else _track_end(data, tables)
        if track_end is not None:
            furthest = max(furthest or 0, track_end)
    return furthest


def _uints(data: Bytes, at: int, count: int, width: int) -> array[int]:
    """`count` big-endian unsigned integers of `width` bytes from `at`, kept compactly."""
    values = array("I" if width == 4 else "Q", _slice(data, at, at + width * count))
    if sys.byteorder == "little":
        values.byteswap()
    return values


def _track_end(data: Bytes, tables: tuple[int, int]) -> int | None:
    boxes = _boxes(data, *tables)
    stsz, stsc = boxes.get(b"stsz"), boxes.get(b"stsc")
    offsets_box, width = (boxes.get(b"stco"), 4) if b"stco" in boxes else (boxes.get(b"co64"), 8)
    if not stsz or not stsc or not offsets_box:
        return None
    (sz_start, sz_end), (sc_start, sc_end) = stsz[0], stsc[0]
    (co_start, co_end) = offsets_box[0]
    if sz_start + 12 > sz_end or sc_start + 8 > sc_end or co_start + 8 > co_end:
        return None
    uniform, count = _be(data, sz_start + 4, 4), _be(data, sz_start + 8, 4)
    runs, chunks = _be(data, sc_start + 4, 4), _be(data, co_start + 4, 4)
    if (
        count > _MAX_SAMPLES
        or chunks > _MAX_SAMPLES
        or (not uniform and sz_start + 12 + 4 * count > sz_end)
        or sc_start + 8 + 12 * runs > sc_end
        or co_start + 8 + width * chunks > co_end
    ):
        return None
    sizes = None if uniform else _uints(data, sz_start + 12, count, 4)
    offsets = _uints(data, co_start + 8, chunks, width)
    table = list(struct.iter_unpack(">III", _slice(data, sc_start + 8, sc_start + 8 + 12 * runs)))
    furthest, sample = 0, 0
    for index, (first, per_chunk, _) in enumerate(table):
        last = table[index + 1][0] - 1 if index + 1 < len(table) else chunks
        if first < 1 or last > chunks:
            return None
        for chunk in range(first, last + 1):
            taken = min(per_chunk, count - sample)
            if taken > 0:
                length = uniform * taken if sizes is None else sum(sizes[sample : sample + taken])
                furthest = max(furthest, offsets[chunk - 1] + length)
            sample += taken
            if sample >= count:
                return furthest
    return furthest


# --- EBML (WebM, Matroska): a header element, then a segment that ends with the file ---

_EBML_HEADER, _SEGMENT, _CLUSTER = 0x1A45DFA3, 0x18538067, 0x1F43B675


def _vint(data: Bytes, at: int, *, marker: bool) -> tuple[int, int, bool] | None:
    """An EBML variable-length integer at `at`: (value, its length in bytes, whether it is
    the reserved all-ones "unknown size"); None where it runs past the end. `marker`
    keeps the length marker bit (element IDs do)."""
    if at >= len(data):
        return None
    first = data[at]
    if first == 0:
        return (0, 0, False)  # no length marker in the first byte: not a vint
    width = 9 - first.bit_length()
    if at + width > len(data):
        return None
    value = _be(data, at, width)
    unknown = value == (1 << (7 * width)) - 1 | (1 << (7 * width))
    if not marker:
        value &= (1 << (7 * width)) - 1
    return value, width, unknown


def _element(data: Bytes, at: int) -> tuple[int, int, int | None] | Flaw:
    """(ID, where its data starts, its data's size or None if unknown) of the element at `at`."""
    element_id = _vint(data, at, marker=True)
    if element_id is None:
        return _short(f"the video ends inside an element header at byte {at}")
    if element_id[1] == 0 or element_id[1] > 4:
        return _bad(f"the video has a broken element at byte {at}")
    size = _vint(data, at + element_id[1], marker=False)
    if size is None:
        return _short(f"the video ends inside an element header at byte {at}")
    if size[1] == 0:
        return _bad(f"the video has a broken element size at byte {at}")
    start = at + element_id[1] + size[1]
    return element_id[0], start, None if size[2] else size[0]


def _ebml(data: Bytes, to_the_end: bool) -> Flaw | None:
    total = len(data)
    header = _element(data, 0)
    if isinstance(header, Flaw):
        return header
    if header[0] != _EBML_HEADER or header[2] is None:
        return _bad("the video's EBML header is broken")
    at = header[1] + header[2]
    if at > total:
        return _short("the video ends inside its EBML header")
    segment = _element(data, at)
    if isinstance(segment, Flaw):
        return segment
    if segment[0] != _SEGMENT:
        return _bad(f"the video has no segment after its EBML header (byte {at})")
    start, length = segment[1], segment[2]
    if length is not None:
        end = start + length
        if end > total:
            return _short(f"the video ends inside its segment ({total} of {end} bytes)")
        if end < total:
            return _bad(f"the video has {total - end} bytes after its segment")
    return _segment_children(data, start, total, known_size=length is not None)


def _segment_children(data: Bytes, at: int, end: int, *, known_size: bool) -> Flaw | None:
    """The segment's elements must add up to its end, up to one of unknown size (a
    live encoder's cluster, which runs to the end and cannot say more), and hold a
    cluster: a segment of headers alone has no picture in it (a file cut before its
    first cluster, or one that never had any)."""
    clusters = False
    for _ in range(_MAX_PARTS):
        if at >= end:
            break
        child = _element(data, at)
        if isinstance(child, Flaw):
            return child
        clusters = clusters or child[0] == _CLUSTER
        if child[2] is None:
            break
        at = child[1] + child[2]
        if at > end:
            reason = "the video ends inside an element of its segment"
            return _bad(reason) if known_size else _short(reason)
    else:
        return _bad(f"the video's segment has more than {_MAX_PARTS} elements")
    if not clusters:
        reason = "the video's segment holds no cluster"
        return _bad(reason) if known_size else _short(reason)
    return None


_CHECKS: dict[str, Callable[[Bytes, bool], Flaw | None]] = {
    "image/png": _png,
    "image/jpeg": _jpeg,
    "image/webp": _webp,
    "image/gif": _gif,
    "video/mp4": _bmff,
    "video/quicktime": _bmff,
    "video/webm": _ebml,
    "video/x-matroska": _ebml,
}
