"""`apimart sizes`: the pixels each size and resolution give."""

import sys

from apimart_cli import console
from apimart_cli.commands.common import handles_errors


def _cell(sizes: tuple[tuple[int, int], ...]) -> str:
    return " / ".join(f"{width}x{height}" for width, height in sizes)


@handles_errors
def sizes() -> None:
    """Print the size x resolution table of the API.

    \b
        apimart sizes | grep 16:9
    """
    from apimart_cli.sizes import PIXELS, RESOLUTIONS

    rows = [[size, *(_cell(PIXELS[size][res]) for res in RESOLUTIONS)] for size in PIXELS]
    if console.is_terminal(sys.stdout):
        from apimart_cli.tables import Column, print_table

        print_table(
            [Column("size"), *(Column(res, flexible=True, wrap=True) for res in RESOLUTIONS)], rows
        )
        return
    console.data("\t".join(["size", *RESOLUTIONS]))
    for row in rows:
        console.data("\t".join(row))
