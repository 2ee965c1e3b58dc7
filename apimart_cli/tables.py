"""Tables for people on a terminal, drawn with rich (imported only here, when one is drawn).

Off a terminal the commands print tab-separated lines instead; this is only the
readable form. Every cell passes through ``console.redact``, like every line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apimart_cli import console

if TYPE_CHECKING:
    from rich.console import Console

MIN_FLEXIBLE_WIDTH = 12  # a prompt or path column narrower than this says nothing


@dataclass(frozen=True)
class Column:
    header: str
    # A flexible column (a prompt, paths) takes the room the others leave: a prompt
    # is cut with an ellipsis, paths (wrap) go on over more lines. The others are
    # as wide as their widest cell; if even that does not fit, they wrap, never cut.
    flexible: bool = False
    wrap: bool = False
    right: bool = False  # numbers


def widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], room: int) -> list[int]:
    """Each column's width in a table ``room`` characters wide (borders and padding
    take 3 per column, plus 1)."""
    natural = [
        max([len(column.header), *(len(row[index]) for row in rows)])
        for index, column in enumerate(columns)
    ]
    room -= 3 * len(columns) + 1
    flexible = [index for index, column in enumerate(columns) if column.flexible]
    left = room - sum(w for index, w in enumerate(natural) if index not in flexible)
    result = list(natural)
    if flexible:
        # Share what is left, the narrower flexible columns first, none below the minimum.
        for position, index in enumerate(sorted(flexible, key=lambda i: natural[i])):
            share = max(MIN_FLEXIBLE_WIDTH, left // (len(flexible) - position))
            result[index] = min(natural[index], share)
            left -= result[index]
    # Still too wide: the other columns wrap (the first, the ids, last of all), then the
    # flexible ones shrink to a few characters.
    fixed = [index for index in range(len(columns)) if index not in flexible]
    order = [*(i for i in reversed(fixed) if i != 0), *flexible, *([0] if 0 in fixed else [])]
    for index in order:
        over = sum(result) - room
        if over <= 0:
            break
        # A column wraps at spaces: no narrower than its longest word, unless it must.
        words = [len(word) for row in rows for word in row[index].split()]
        floor = 4 if index in flexible else max([len(columns[index].header), *words])
        if index == 0:
            floor = 8
        result[index] -= max(0, min(over, result[index] - floor))
    return result


def cramped(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], fitted: Sequence[int]
) -> bool:
    """Whether a table of ``fitted`` widths says too little to be read: its first column
    (the ids) no longer whole on a line, or a flexible one (a prompt, paths) cut down
    below MIN_FLEXIBLE_WIDTH, where a path wraps a few letters a line."""
    natural = [
        max([len(column.header), *(len(row[index]) for row in rows)])
        for index, column in enumerate(columns)
    ]
    if fitted and fitted[0] < natural[0]:
        return True
    return any(
        column.flexible and width < min(MIN_FLEXIBLE_WIDTH, natural[index])
        for index, (column, width) in enumerate(zip(columns, fitted, strict=True))
    )


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Draw ``rows`` under ``columns`` on standard output, fitted to the terminal; on one
    too narrow for the table, each row as a record, a line per column."""
    from rich.console import Console  # only here: rich is slow to import
    from rich.table import Table
    from rich.text import Text

    out = Console(no_color=not console.use_color(sys.stdout))
    fitted = widths(columns, rows, out.width)
    if cramped(columns, rows, fitted):
        _print_records(out, columns, rows)
        return
    table = Table()
    for column, width in zip(columns, fitted, strict=True):
        cut = column.flexible and not column.wrap
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            width=width,
            overflow="ellipsis" if cut else "fold",
            no_wrap=cut,
        )
    for row in rows:
        # Text, not markup: a prompt's [brackets] are shown as typed.
        table.add_row(*(Text(console.redact(cell)) for cell in row))
    out.print(table)


def _print_records(out: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Each row as its own block: a line per column, its header then its value (a prompt
    on one line, cut with an ellipsis; anything else whole, wrapped), a blank line between."""
    from rich.table import Table
    from rich.text import Text

    for number, row in enumerate(rows):
        record = Table.grid(padding=(0, 2))
        record.add_column(no_wrap=True, style="bold")
        record.add_column(overflow="fold")
        for column, cell in zip(columns, row, strict=True):
            cut = column.flexible and not column.wrap
            value = Text(console.redact(cell), no_wrap=cut, overflow="ellipsis" if cut else "fold")
            record.add_row(Text(column.header), value)
        if number:
            out.print()
        out.print(record)
