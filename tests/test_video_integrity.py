"""Whether a downloaded video is whole, from its own ISO-BMFF or EBML structure."""

from __future__ import annotations

import struct

import pytest

from apimart_cli.images import media_extension, sniff_video
from apimart_cli.integrity import flaw
from apimart_cli.sandbox.videos import mp4_video


def box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def large_box(kind: bytes, body: bytes) -> bytes:
    """A box with a 64-bit size (size field 1, the real size after the type)."""
    return struct.pack(">I", 1) + kind + struct.pack(">Q", 16 + len(body)) + body


FTYP = box(b"ftyp", b"isom\0\0\2\0isommp41")
MOOV = box(b"moov", box(b"mvhd", b"\0" * 100))


def element(element_id: bytes, body: bytes, *, unknown: bool = False) -> bytes:
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown else struct.pack(">Q", len(body))
    if not unknown:
        size = b"\x01" + size[1:]  # an 8-byte EBML size: marker 0x01, then 7 bytes of value
    return element_id + size + body


EBML = element(b"\x1a\x45\xdf\xa3", element(b"\x42\x82", b"webm"))
SEGMENT_ID = b"\x18\x53\x80\x67"
CLUSTER = element(b"\x1f\x43\xb6\x75", b"\0" * 40)
WEBM = EBML + element(SEGMENT_ID, element(b"\x15\x49\xa9\x66", b"\0" * 8) + CLUSTER)


def test_the_sandbox_mp4_is_whole_and_every_cut_of_it_is_short() -> None:
    video = mp4_video(64, 64, 1, "waves")
    assert flaw(video, to_the_end=True) is None
    for end in (9, len(FTYP), 100, len(video) // 2, len(video) - 1):
        problem = flaw(video[:end], to_the_end=True)
        assert problem is not None and problem.short, end


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (FTYP + MOOV + box(b"mdat", b"x" * 50), True),
        (FTYP + box(b"mdat", b"x" * 50) + MOOV, True),  # moov last, as many encoders write
        (FTYP + MOOV + large_box(b"mdat", b"x" * 50), True),  # a 64-bit size
        (FTYP + MOOV + struct.pack(">I", 0) + b"mdat" + b"x" * 50, True),  # to the file's end
        (FTYP + MOOV + box(b"free") + box(b"mdat", b"x"), True),
        (FTYP + box(b"mdat", b"x" * 50), False),  # no moov: cut before it
        (FTYP + MOOV, False),  # no mdat
        (FTYP + MOOV + box(b"mdat", b"x" * 50)[:-1], False),
        (FTYP + MOOV + large_box(b"mdat", b"x" * 50)[:12], False),  # inside the 64-bit size
    ],
)
def test_iso_bmff_boxes_must_add_up_with_ftyp_moov_and_mdat(data: bytes, whole: bool) -> None:
    problem = flaw(data, to_the_end=False)  # a video is walked to its end whatever is asked
    assert (problem is None) is whole, problem


@pytest.mark.parametrize(
    "data",
    [
        FTYP + struct.pack(">I", 4) + b"mdat",  # a box smaller than its header
        FTYP + box(b"m\0at", b"x"),  # a type that is no type
        FTYP[:4] + b"ftyp" + b"\0" * 3,  # an ftyp box stating more than its header holds... short
    ],
)
def test_broken_or_short_iso_bmff_is_never_whole(data: bytes) -> None:
    assert flaw(data, to_the_end=True) is not None


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (WEBM, True),
        (WEBM[:-1], False),
        (WEBM + b"\0", False),  # bytes after the segment
        (EBML + element(SEGMENT_ID, CLUSTER, unknown=True), True),  # a live encoder's segment
        (EBML[:10], False),
        (EBML, False),  # no segment
    ],
)
def test_webm_needs_its_header_and_a_segment_that_ends_with_the_file(
    data: bytes, whole: bool
) -> None:
    problem = flaw(data, to_the_end=True)
    assert (problem is None) is whole, problem


INFO = element(b"\x15\x49\xa9\x66", b"\0" * 8)


@pytest.mark.parametrize(
    ("data", "short"),
    [
        (EBML + element(SEGMENT_ID, b"", unknown=True), True),  # headers, then nothing
        (EBML + element(SEGMENT_ID, INFO, unknown=True), True),  # cut before its first cluster
        (EBML + element(SEGMENT_ID, INFO), False),  # a whole segment that never had one
        (EBML + element(SEGMENT_ID, INFO[:-4] + CLUSTER), False),  # its parts overrun it
    ],
)
def test_a_webm_segment_without_a_cluster_is_never_whole(data: bytes, short: bool) -> None:
    problem = flaw(data, to_the_end=True)
    assert problem is not None and problem.short is short, problem


def _mdat_to_the_end(video: bytes) -> bytes:
    """The video with its mdat's size set to 0: the box runs to the end of the file."""
    at = video.index(b"mdat") - 4
    return video[:at] + struct.pack(">I", 0) + video[at + 4 :]


def test_an_mdat_that_runs_to_the_end_is_whole_only_with_every_sample_in_the_file() -> None:
    """A box of size 0 says nothing of where the file ends, so a host that cut it short
    (announcing the length it sent) leaves boxes that add up: the sample tables in
    moov, which say where each frame lies, are what show the file is short."""
    video = _mdat_to_the_end(mp4_video(64, 64, 1, "waves"))
    assert flaw(video, to_the_end=True) is None
    mdat = video.index(b"mdat") + 4
    for end in (mdat + 1, (mdat + len(video)) // 2, len(video) - 1):
        problem = flaw(video[:end], to_the_end=True)
        assert problem is not None and problem.short, end


def test_sample_tables_that_cannot_be_read_leave_the_boxes_to_judge() -> None:
    """Broken or missing tables (a fragmented file keeps its samples in moof boxes) are
    no reason to refuse a file whose boxes add up."""
    tables = box(b"stbl", box(b"stsz", b"\0" * 8 + struct.pack(">I", 10**9)) + box(b"stco"))
    moov = box(b"moov", box(b"trak", box(b"mdia", box(b"minf", tables))))
    video = FTYP + moov + struct.pack(">I", 0) + b"mdat" + b"x" * 50
    assert flaw(video, to_the_end=True) is None


def test_extension_and_type_come_from_the_bytes() -> None:
    assert media_extension(mp4_video(64, 64, 1, "x")[:64]) == ".mp4"
    assert media_extension(box(b"ftyp", b"qt  \0\0\0\0qt  ")[:64]) == ".mov"
    assert media_extension(WEBM[:64]) == ".webm"
    assert sniff_video(b"<html>not a video</html>") is None
    assert media_extension(b"\x89PNG\r\n\x1a\n") == ".png"


def test_a_file_of_millions_of_tiny_boxes_is_refused_not_walked_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apimart_cli import integrity

    monkeypatch.setattr(integrity, "_MAX_PARTS", 10)
    many = FTYP + MOOV + box(b"mdat") + box(b"free") * 20
    problem = flaw(many, to_the_end=True)
    assert problem is not None and not problem.short and "more than 10" in problem.reason
    assert flaw(FTYP + MOOV + box(b"mdat") + box(b"free") * 5, to_the_end=True) is None
    segment = EBML + element(SEGMENT_ID, element(b"\x15\x49\xa9\x66", b"") * 20, unknown=True)
    problem = flaw(segment, to_the_end=True)
    assert problem is not None and "more than 10" in problem.reason
