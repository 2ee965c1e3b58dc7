"""Fitting a table to the terminal: ids whole, the prompt and paths give way first."""

from __future__ import annotations

import pytest

from apimart_cli.tables import Column, widths

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
