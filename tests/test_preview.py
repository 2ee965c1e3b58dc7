"""Inline previews: which terminal speaks what, and the exact escapes written."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from apimart_cli import preview
from apimart_cli.sandbox import gradient_png


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3"}, "kitty"),
        ({"TERM": "xterm-ghostty"}, "kitty"),
        ({"TERM_PROGRAM": "ghostty"}, "kitty"),
        ({"TERM_PROGRAM": "iTerm.app", "TERM": "xterm-256color"}, "iterm"),
        ({"LC_TERMINAL": "iTerm2", "TERM": "screen"}, "iterm"),
        ({"TERM_PROGRAM": "WezTerm"}, "iterm"),
        ({"TERM": "xterm-256color"}, None),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"}, None),
        ({"TERM": "dumb"}, None),
        ({}, None),
    ],
)
def test_protocol_from_the_environment(env: dict[str, str], expected: str | None) -> None:
    assert preview.protocol(env) == expected


@pytest.mark.parametrize(
    ("size", "columns", "rows", "expected"),
    [
        ((1024, 1024), 200, 60, (60, 30)),  # square: 60 wide is 30 rows, half of 60
        ((1024, 1024), 40, 60, (39, 20)),  # a narrow window: one column spare
        ((1024, 1024), 200, 40, (40, 20)),  # a short window: narrower, to fit half of it
        ((1920, 1080), 200, 60, (60, 17)),  # 16:9
        ((1024, 4096), 200, 60, (15, 30)),  # 1:4 in a 60-row window: 30 rows at most
        (None, 200, 60, (60, None)),  # unknown proportions: the terminal keeps them
        ((100, 100), 3, 60, (8, 4)),  # never narrower than 8
    ],
)
def test_cells(
    size: tuple[int, int] | None, columns: int, rows: int, expected: tuple[int, int | None]
) -> None:
    assert preview.cells(size, columns, rows) == expected


def test_kitty_escape_of_a_small_png_is_one_chunk() -> None:
    data = b"\x89PNG tiny"
    payload = base64.standard_b64encode(data).decode()
    assert preview.kitty(data, 20, 10) == [f"\x1b_Ga=T,f=100,q=2,c=20,r=10,m=0;{payload}\x1b\\"]


def test_kitty_escapes_are_chunked_at_4096_bytes() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes: 13656 base64 characters, four chunks
    payload = base64.standard_b64encode(data).decode()
    escapes = preview.kitty(data, 30)
    assert escapes == [
        f"\x1b_Ga=T,f=100,q=2,c=30,m=1;{payload[:4096]}\x1b\\",
        f"\x1b_Gm=1;{payload[4096:8192]}\x1b\\",
        f"\x1b_Gm=1;{payload[8192:12288]}\x1b\\",
        f"\x1b_Gm=0;{payload[12288:]}\x1b\\",
    ]
    assert len(payload) == 13656


def test_iterm_escape() -> None:
    data = b"\x89PNG tiny"
    name = base64.standard_b64encode(b"a.png").decode()
    payload = base64.standard_b64encode(data).decode()
    assert preview.iterm(data, 40, "a.png") == (
        f"\x1b]1337;File=name={name};size={len(data)};width=40;preserveAspectRatio=1;inline=1"
        f":{payload}\x07"
    )


def test_escape_of_a_file(tmp_path: Path) -> None:
    png = gradient_png(200, 100, "fox", 0)
    path = tmp_path / "t_0.png"
    path.write_bytes(png)
    payload = base64.standard_b64encode(png).decode()
    assert preview.escape(path, "kitty", columns=100, rows=50) == (
        f"\x1b_Ga=T,f=100,q=2,c=60,r=15,m=0;{payload}\x1b\\"
    )
    assert preview.escape(path, "iterm", columns=100, rows=50) == preview.iterm(png, 60, "t_0.png")


def test_inside_tmux_each_escape_is_passed_through(tmp_path: Path) -> None:
    path = tmp_path / "t_0.png"
    path.write_bytes(gradient_png(8, 8, "fox", 0))
    plain = preview.escape(path, "kitty")
    wrapped = preview.escape(path, "kitty", in_tmux=True)
    assert plain is not None
    assert wrapped == "\x1bPtmux;" + plain.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def test_kitty_shows_only_pngs_and_nothing_is_shown_of_a_missing_file(tmp_path: Path) -> None:
    jpeg = tmp_path / "t_0.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    assert preview.escape(jpeg, "kitty") is None
    assert preview.escape(jpeg, "iterm") is not None  # iTerm2 draws JPEG itself
    assert preview.escape(tmp_path / "missing.png", "iterm") is None


def test_a_terminal_that_reports_no_size_gets_columns_and_lines_or_80_by_24() -> None:
    import os

    read, write = os.pipe()  # not a terminal: no size at all
    try:
        assert preview.window_size(write, {}) == (80, 24)
        assert preview.window_size(write, {"COLUMNS": "120", "LINES": "50"}) == (120, 50)
        assert preview.window_size(write, {"COLUMNS": "0", "LINES": "x"}) == (80, 24)
    finally:
        os.close(read)
        os.close(write)
