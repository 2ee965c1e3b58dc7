"""The API's sizes and resolutions, and the rule for reading a `--size` value."""

from __future__ import annotations

import re
from dataclasses import dataclass

from apimart_cli.constants import MAX_PIXEL_SIDE
from apimart_cli.errors import UsageError

RESOLUTIONS = ("1k", "2k", "4k")

# size -> resolution -> pixels (width, height). The 1k column's first entry is the
# one the service usually returns; the second is one it may also return (APIMart's
# documentation of the image generation endpoint).
PIXELS: dict[str, dict[str, tuple[tuple[int, int], ...]]] = {
    "1:1": {"1k": ((1024, 1024), (1254, 1254)), "2k": ((2048, 2048),), "4k": ((2880, 2880),)},
    "3:2": {"1k": ((1536, 1024),), "2k": ((2048, 1360),), "4k": ((3520, 2336),)},
    "2:3": {"1k": ((1024, 1536),), "2k": ((1360, 2048),), "4k": ((2336, 3520),)},
    "4:3": {"1k": ((1024, 768),), "2k": ((2048, 1536),), "4k": ((3312, 2480),)},
    "3:4": {"1k": ((768, 1024),), "2k": ((1536, 2048),), "4k": ((2480, 3312),)},
    "5:4": {"1k": ((1280, 1024), (1448, 1086)), "2k": ((2560, 2048),), "4k": ((3216, 2576),)},
    "4:5": {"1k": ((1024, 1280), (1122, 1402)), "2k": ((2048, 2560),), "4k": ((2576, 3216),)},
    "16:9": {"1k": ((1536, 864), (1672, 941)), "2k": ((2048, 1152),), "4k": ((3840, 2160),)},
    "9:16": {"1k": ((864, 1536), (941, 1672)), "2k": ((1152, 2048),), "4k": ((2160, 3840),)},
    "2:1": {"1k": ((2048, 1024), (1774, 887)), "2k": ((2688, 1344),), "4k": ((3840, 1920),)},
    "1:2": {"1k": ((1024, 2048), (887, 1774)), "2k": ((1344, 2688),), "4k": ((1920, 3840),)},
    "3:1": {"1k": ((1881, 836), (1536, 512)), "2k": ((3072, 1024),), "4k": ((3840, 1280),)},
    "1:3": {"1k": ((887, 1774), (512, 1536)), "2k": ((1024, 3072),), "4k": ((1280, 3840),)},
    "21:9": {"1k": ((2016, 864), (1915, 821)), "2k": ((2688, 1152),), "4k": ((3840, 1648),)},
    "9:21": {"1k": ((864, 2016), (821, 1915)), "2k": ((1152, 2688),), "4k": ((1648, 3840),)},
}
RATIOS = tuple(PIXELS)
SIZE_CHOICES = ("auto", *RATIOS)
KNOWN_PIXEL_SIZES = frozenset(
    wh for by_resolution in PIXELS.values() for sizes in by_resolution.values() for wh in sizes
)

_PIXELS_RE = re.compile(r"^(\d{1,5})[xX×](\d{1,5})$")

# A side shorter than this is almost surely a ratio typed with an x (`16x9`): it is
# refused unless forced (`--force-size`), rather than paid for as a 16x9-pixel image.
MIN_PIXEL_SIDE = 64


@dataclass(frozen=True)
class Size:
    """A parsed `--size`: the value to send, and the pixels when it names them."""

    value: str
    pixels: tuple[int, int] | None = None

    @property
    def in_table(self) -> bool:
        """False for a `WxH` the API's table does not list (sent anyway, with a note)."""
        return self.pixels is None or self.pixels in KNOWN_PIXEL_SIZES


def parse_size(text: str, *, force: bool = False) -> Size:
    """Read `auto`, a ratio such as `16:9`, or pixels such as `1881x836`.

    Pixels under ``MIN_PIXEL_SIDE`` a side are refused unless ``force``.
    """
    value = text.strip()
    if value.lower() == "auto":
        return Size("auto")
    if value in PIXELS:
        return Size(value)
    match = _PIXELS_RE.match(value)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        for side in (width, height):
            if not 1 <= side <= MAX_PIXEL_SIDE:
                raise UsageError(
                    f"Invalid size {text!r}: each side must be 1 to {MAX_PIXEL_SIDE} pixels.",
                    "Use a ratio such as 16:9 (see `apimart sizes`) or pixels such as 1536x864.",
                )
        if min(width, height) < MIN_PIXEL_SIDE and not force:
            ratio = f"{width}:{height}"
            meant = f"the ratio {ratio}" if ratio in PIXELS else "a ratio such as 16:9"
            raise UsageError(
                f"Size {text!r} is {width}x{height} pixels, under {MIN_PIXEL_SIDE} a side:"
                f" did you mean {meant}?",
                "Ratios are written with a colon (see `apimart sizes`);"
                " --force-size sends a tiny size as given.",
            )
        return Size(f"{width}x{height}", (width, height))
    raise UsageError(
        f"Invalid size {text!r}.",
        f"Use auto, one of {', '.join(RATIOS)}, or pixels WxH such as 1536x864.",
    )


def parse_resolution(text: str) -> str:
    """Read `1k`, `2k` or `4k` (any case)."""
    value = text.strip().lower()
    if value not in RESOLUTIONS:
        raise UsageError(f"Invalid resolution {text!r}.", f"Use one of {', '.join(RESOLUTIONS)}.")
    return value


def pixels_for(size: str | None, resolution: str | None) -> tuple[int, int] | None:
    """The pixels the service returns for a size and resolution, where the table says."""
    if size is None or size == "auto":
        size = "1:1"
    parsed = parse_size(size, force=True)  # a size already sent: it is what it is
    if parsed.pixels is not None:
        return parsed.pixels
    return PIXELS[parsed.value][resolution or "1k"][0]
