"""Fitting a table to the terminal: ids whole, the prompt and paths give way first."""

from __future__ import annotations

import pytest

from apimart_cli.tables import Column, print_table, widths

COLUMNS = [
    Column("task"),
    Column("submitted"),
    Column("state"),
    Column("prompt", flexible=True),
    Column("files", flexible=True, wrap=True),
    Column("cost", right=True),
]
ROW = [
    "task_" + "X" * 31,
    "2026-12-02 03:59:38",
    "submitted (sandbox)",
    "p " * 50,
    "/o/" * 20,
    "0.05",
]


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        # Wide: every column as wide as its widest cell.
        (300, [36, 19, 19, 100, 60, 4]),
        # The flexible columns share what the others leave.
        (160, [36, 19, 19, 32, 31, 4]),
        # Then the state and the time wrap at their spaces, the prompt shrinks; the id stays.
        (100, [36, 10, 9, 10, 12, 4]),
        # Only where nothing else can give does the id wrap (folded, never cut).
        (60, [10, 10, 9, 4, 4, 4]),
    ],
)
def test_widths(room: int, expected: list[int]) -> None:
    assert widths(COLUMNS, [ROW], room) == expected


def test_widths_fit_the_room_when_they_can() -> None:
    for room in range(60, 300, 7):
        assert sum(widths(COLUMNS, [ROW], room)) + 3 * len(COLUMNS) + 1 <= room


def _drawn(width: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("NO_COLOR", "1")
    print_table(COLUMNS, [ROW, ROW])
    return capsys.readouterr().out


@pytest.mark.parametrize("width", [40, 80])
def test_a_table_too_wide_for_the_terminal_shows_each_row_as_a_record(
    width: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """history at 80 columns folded the id over two lines and the paths four letters a
    line; at 40 every column was a letter or a few wide. Each row becomes a record: a
    line per column, the id and the values whole."""
    lines = _drawn(width, capsys, monkeypatch).splitlines()
    assert all(len(line) <= width for line in lines), lines
    ids = [index for index, line in enumerate(lines) if line.startswith("task ")]
    assert len(ids) == 2, lines
    for index in ids:  # whole: on its line, or folded onto the next where it cannot fit
        text = lines[index].split()[1] + (lines[index + 1].strip() if width < 50 else "")
        assert text == ROW[0], lines
    assert any(line.split()[:2] == ["submitted", "2026-12-02"] for line in lines), lines
    assert any(line.split() == ["cost", "0.05"] for line in lines), lines
    assert len(lines) < 30, lines  # paths wrap at the record's width, not a column's


def test_a_table_that_fits_stays_a_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _drawn(200, capsys, monkeypatch).splitlines()
    assert lines[0].startswith("┏") and lines[-1].startswith("└"), lines
    assert sum(line.startswith(f"│ {ROW[0]} ") for line in lines) == 2, lines
