"""The sandbox's videos: small H.264 MP4 files that a browser plays.

Each is `ftyp`, then `moov` (a movie header and one video track, with the sample
tables that say where each frame lies and the decoder's configuration), then
`mdat` with the frames: a first picture sent as raw samples (I_PCM macroblocks,
no transform to get right), a gradient coloured by the prompt, then pictures
that skip every macroblock and so repeat it. That is a valid Baseline H.264
stream of a still picture, and what `apimart` checks of a video, its ISO-BMFF
structure, is whole. A large file (a benchmark's) is padded with a `free` box.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct

FRAME_RATE = 24
TIMESCALE = FRAME_RATE * 1000  # each frame 1,000 ticks: whole seconds are exact
VIDEO_CACHE_ENTRIES = 4  # a large video (a benchmark's) is hundreds of MB
_PADDING_BLOCK = 1024 * 1024  # a large file's padding: this many random bytes, repeated


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


class _Bits:
    """A bit writer for H.264 headers: fixed-width fields and Exp-Golomb codes."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, width: int, value: int) -> None:
        self.bits += [(value >> shift) & 1 for shift in range(width - 1, -1, -1)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align(self) -> None:
        while len(self.bits) % 8:
            self.bits.append(0)

    def trailing(self) -> None:
        self.bits.append(1)
        self.align()

    def raw(self, data: bytes) -> None:
        for byte in data:
            self.u(8, byte)

    def bytes(self) -> bytes:
        assert len(self.bits) % 8 == 0
        return bytes(
            int("".join(map(str, self.bits[i : i + 8])), 2) for i in range(0, len(self.bits), 8)
        )


def _nal(header: int, rbsp: bytes) -> bytes:
    """A NAL unit: its header byte, then the payload with emulation prevention bytes."""
    out, zeros = bytearray([header]), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_PROFILE, _LEVEL = 66, 30  # Baseline, level 3.0


def _sps(mbs_wide: int, mbs_high: int, crop_bottom: int) -> bytes:
    bits = _Bits()
    bits.u(8, _PROFILE)
    bits.u(8, 0xC0)  # constraint_set0 and set1: plain Baseline
    bits.u(8, _LEVEL)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4: frame_num counts 0-15
    bits.ue(2)  # pic_order_cnt_type 2: output order is decoding order
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mbs_wide - 1)
    bits.ue(mbs_high - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    bits.u(1, 1 if crop_bottom else 0)  # frame_cropping_flag
    if crop_bottom:
        for offset in (0, 0, 0, crop_bottom // 2):  # in 4:2:0, rows of two
            bits.ue(offset)
    bits.u(1, 0)  # vui_parameters_present_flag
    bits.trailing()
    return _nal(0x67, bits.bytes())


def _pps() -> bytes:
    bits = _Bits()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 0)  # deblocking_filter_control_present_flag
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    bits.trailing()
    return _nal(0x68, bits.bytes())


_I_PCM = 25  # mb_type of a macroblock sent as raw samples, in an I slice


def _idr_frame(mbs_wide: int, mbs_high: int, seed: bytes) -> bytes:
    """An IDR picture of raw-sample (I_PCM) macroblocks: a gradient coloured by `seed`."""
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I, as every slice of the picture
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, 0)  # frame_num
    bits.ue(0)  # idr_pic_id
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    cb, cr = 64 + seed[0] // 2, 64 + seed[1] // 2
    for row in range(mbs_high):
        for column in range(mbs_wide):
            bits.ue(_I_PCM)
            bits.align()  # pcm_alignment_zero_bit
            luma = bytes(
                # No sample is 0, so raw samples never look like a start code.
                16 + (column * 16 + x) * 200 // (mbs_wide * 16) + (row * 16 + y) % 24
                for y in range(16)
                for x in range(16)
            )
            bits.raw(luma + bytes([cb]) * 64 + bytes([cr]) * 64)
    bits.trailing()
    return _nal(0x65, bits.bytes())


def _skipped_frame(number: int, macroblocks: int) -> bytes:
    """A P picture whose every macroblock is skipped: the previous picture again."""
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(5)  # slice_type: P, as every slice of the picture
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, number % 16)  # frame_num
    bits.u(1, 0)  # num_ref_idx_active_override_flag
    bits.u(1, 0)  # ref_pic_list_modification_flag_l0
    bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(macroblocks)  # mb_skip_run: all of them
    bits.trailing()
    return _nal(0x41, bits.bytes())


def _avcc(sps: bytes, pps: bytes) -> bytes:
    return _box(
        b"avcC",
        bytes([1, _PROFILE, 0xC0, _LEVEL, 0xFF, 0xE1]),
        struct.pack(">H", len(sps)),
        sps,
        bytes([1]),
        struct.pack(">H", len(pps)),
        pps,
    )


def _moov(width: int, height: int, sizes: list[int], first_offset: int, avcc: bytes) -> bytes:
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
        b"avc1", b"\0" * 6, struct.pack(">H", 1), b"\0" * 16, struct.pack(">HH", width, height),
        struct.pack(">II", 0x480000, 0x480000), b"\0" * 4, struct.pack(">H", 1), b"\0" * 32,
        struct.pack(">Hh", 0x18, -1), avcc,
    )  # fmt: skip
    stsd = _full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry)
    stts = _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, TIMESCALE // FRAME_RATE))
    stss = _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1))  # the first frame alone is whole
    stsc = _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1))
    table = struct.pack(f">{frames}I", *sizes)
    stsz = _full_box(b"stsz", 0, 0, struct.pack(">II", 0, frames), table)
    stco = _full_box(b"stco", 0, 0, struct.pack(">II", 1, first_offset))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    minf = _box(
        b"minf", _full_box(b"vmhd", 0, 1, b"\0" * 8), dinf,
        _box(b"stbl", stsd, stts, stss, stsc, stsz, stco),
    )  # fmt: skip
    return _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))


def mp4_video(width: int, height: int, seconds: float, seed: str, size: int | None = None) -> bytes:
    """An H.264 MP4 of `seconds` at FRAME_RATE: a still picture drawn from `seed` (its
    first frame, then frames that repeat it), `width` a multiple of 16. Where `size` is
    given, a `free` box after the frames makes the file about that large."""
    mbs_wide, mbs_high = width // 16, -(-height // 16)
    digest = hashlib.sha256(seed.encode()).digest()
    frames = max(1, round(seconds * FRAME_RATE))
    samples = [_idr_frame(mbs_wide, mbs_high, digest)]
    samples += [_skipped_frame(i, mbs_wide * mbs_high) for i in range(1, frames)]
    samples = [struct.pack(">I", len(nal)) + nal for nal in samples]
    avcc = _avcc(_sps(mbs_wide, mbs_high, mbs_high * 16 - height), _pps())
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomavc1mp41")
    sizes = [len(sample) for sample in samples]
    # The moov's length does not depend on where the frames start: measure it once.
    first_offset = len(ftyp) + len(_moov(width, height, sizes, 0, avcc)) + 8
    video = ftyp + _moov(width, height, sizes, first_offset, avcc) + _box(b"mdat", *samples)
    if size and size > len(video) + 8:
        padding = size - len(video) - 8
        block = random.Random(digest).randbytes(min(padding, _PADDING_BLOCK))
        video += _box(b"free", (block * (padding // len(block) + 1))[:padding])
    return video


@functools.lru_cache(maxsize=VIDEO_CACHE_ENTRIES)
def cached_video(
    width: int, height: int, seconds: float, seed: str, size: int | None = None, version: int = 0
) -> bytes:
    """A task's video, made once; each `version` another one (a video that changed)."""
    return mp4_video(width, height, seconds, seed if not version else f"{seed}:v{version}", size)
