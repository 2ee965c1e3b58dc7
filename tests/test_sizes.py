"""Reading `--size` and `--resolution`, and the API's pixel table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.errors import ExitCode, UsageError
from apimart_cli.sizes import (
    PIXELS,
    RATIOS,
    Size,
    parse_resolution,
    parse_size,
    pixels_for,
)

ALL_RATIOS = ["1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16"]
ALL_RATIOS += ["2:1", "1:2", "3:1", "1:3", "21:9", "9:21"]


def test_the_fifteen_ratios_of_the_api_page() -> None:
    assert tuple(ALL_RATIOS) == RATIOS


@pytest.mark.parametrize("ratio", ALL_RATIOS)
def test_parse_size_ratio(ratio: str) -> None:
    size = parse_size(ratio)
    assert size == Size(ratio)
    assert size.in_table
    assert parse_size(f"  {ratio}\n") == Size(ratio)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", Size("auto")),
        ("AUTO", Size("auto")),
        (" Auto ", Size("auto")),
        ("1881x836", Size("1881x836", (1881, 836))),
        ("1536X864", Size("1536x864", (1536, 864))),
        ("1536×864", Size("1536x864", (1536, 864))),
        (" 1024x1024 ", Size("1024x1024", (1024, 1024))),
        ("01024x0768", Size("1024x768", (1024, 768))),
        ("64x64", Size("64x64", (64, 64))),
        ("3840x3840", Size("3840x3840", (3840, 3840))),
        ("3840x2160", Size("3840x2160", (3840, 2160))),
    ],
)
def test_parse_size(text: str, expected: Size) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "in_table"),
    [
        ("1881x836", True),
        ("1024x1024", True),
        ("1254x1254", True),
        ("3840x2160", True),
        ("1000x1000", False),
        ("64x3840", False),
        ("auto", True),
        ("16:9", True),
    ],
)
def test_size_in_table(text: str, in_table: bool) -> None:
    assert parse_size(text).in_table is in_table


@pytest.mark.parametrize(
    "text",
    [
        "0x10",
        "10x0",
        "3841x10",
        "10x3841",
        "99999x1",
        "123456x1",
        "abc",
        "",
        "   ",
        "16:10",
        "16/9",
        "1:1:1",
        "1024",
        "1024x",
        "x1024",
        "1024*1024",
        "1024 x 1024",
        "-1x10",
        "1.5x10",
        "1024x1024px",
    ],
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size(text, force=True)  # forcing lets a tiny size through, nothing else
    assert repr(text) in caught.value.message
    with pytest.raises(UsageError) as caught:
        parse_size(text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert repr(text) in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    ("size", "resolution", "pixels"),
    [
        (None, None, (1024, 1024)),
        ("auto", None, (1024, 1024)),
        ("auto", "4k", (2880, 2880)),
        ("1:1", "1k", (1024, 1024)),
        ("1:1", "2k", (2048, 2048)),
        ("16:9", None, (1536, 864)),
        ("16:9", "4k", (3840, 2160)),
        ("9:16", "2k", (1152, 2048)),
        ("3:1", "1k", (1881, 836)),
        ("21:9", "4k", (3840, 1648)),
        ("1881x836", None, (1881, 836)),
        ("1000x700", "4k", (1000, 700)),
    ],
)
def test_pixels_for(size: str | None, resolution: str | None, pixels: tuple[int, int]) -> None:
    assert pixels_for(size, resolution) == pixels


@pytest.mark.parametrize("ratio", ALL_RATIOS)
@pytest.mark.parametrize("resolution", ["1k", "2k", "4k"])
def test_pixels_for_every_ratio_matches_its_shape(ratio: str, resolution: str) -> None:
    """The first listed size is used; some listed size has the ratio's shape.

    (The vendor lists 1881x836 and 887x1774 first for 3:1 and 1:3 at 1k.)
    """
    assert pixels_for(ratio, resolution) == PIXELS[ratio][resolution][0]
    across, down = (int(part) for part in ratio.split(":"))
    shapes = [width / height for width, height in PIXELS[ratio][resolution]]
    assert any(abs(shape - across / down) < 0.05 * across / down for shape in shapes)
    for width, height in PIXELS[ratio][resolution]:
        assert 1 <= width <= 3840 and 1 <= height <= 3840


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1k", "1k"), ("2k", "2k"), ("4k", "4k"), ("4K", "4k"), (" 2K ", "2k")],
)
def test_parse_resolution(text: str, expected: str) -> None:
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["", "3k", "8k", "1024", "k", "hd", "1 k"])
def test_parse_resolution_refuses(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_resolution(text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert repr(text) in caught.value.message


sides = st.integers(min_value=-10, max_value=100_000).map(str) | st.text(
    alphabet="0123456789", min_size=1, max_size=7
)


@given(width=sides, height=sides, sep=st.sampled_from(["x", "X", "×"]))
def test_parse_size_pixels_are_in_range_or_refused(width: str, height: str, sep: str) -> None:
    try:
        size = parse_size(f"{width}{sep}{height}")
    except UsageError as error:
        assert error.exit_code == ExitCode.USAGE
        return
    assert size.pixels is not None
    assert all(1 <= side <= 3840 for side in size.pixels)
    assert size.value == f"{size.pixels[0]}x{size.pixels[1]}"


@given(st.text(max_size=20))
def test_parse_size_on_any_text_is_a_size_or_a_usage_error(text: str) -> None:
    try:
        size = parse_size(text)
    except UsageError:
        return
    assert size.value == "auto" or size.value in PIXELS or size.pixels is not None
    if size.pixels is not None:
        assert all(1 <= side <= 3840 for side in size.pixels)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("16x9", "the ratio 16:9"),
        ("9x16", "the ratio 9:16"),
        ("21x9", "the ratio 21:9"),
        ("3X2", "the ratio 3:2"),
        ("1x1", "the ratio 1:1"),
        ("10x10", "a ratio such as 16:9"),
        ("63x1024", "a ratio such as 16:9"),
    ],
)
def test_a_tiny_pixel_size_asks_whether_a_ratio_was_meant(text: str, meant: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size(text)
    assert caught.value.message.endswith(f"under 64 a side: did you mean {meant}?")
    assert repr(text) in caught.value.message
    assert "--force-size" in (caught.value.hint or "")


@pytest.mark.parametrize("text", ["16x9", "1x1", "63x1024"])
def test_a_tiny_pixel_size_is_sent_when_forced(text: str) -> None:
    width, height = (int(side) for side in text.split("x"))
    assert parse_size(text, force=True) == Size(text, (width, height))
