"""`apimart sizes`: the pixels each size and resolution give."""

import sys

from apimart_cli import console


def _cell(sizes: tuple[tuple[int, int], ...]) -> str:
    return " / ".join(f"{width}x{height}" for width, height in sizes)


def sizes() -> None:
    """Print the size x resolution table of the API.

    apimart sizes | grep 16:9
    """
    from apimart_cli.sizes import PIXELS, RESOLUTIONS

    rows = [[size, *(_cell(PIXELS[size][res]) for res in RESOLUTIONS)] for size in PIXELS]
    if console.is_terminal(sys.stdout):
        from rich.console import Console  # only here: rich is slow to import
        from rich.table import Table

        table = Table("size", *RESOLUTIONS)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    console.data("\t".join(["size", *RESOLUTIONS]))
    for row in rows:
        console.data("\t".join(row))
