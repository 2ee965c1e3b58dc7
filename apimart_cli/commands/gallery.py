"""`apimart gallery`: a page of the images in a folder."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state


@handles_errors
def gallery(
    ctx: typer.Context,
    folder: Annotated[
        Optional[Path],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(
            help="The folder of images. [default: the output folder setting]",
            show_default=False,
        ),
    ] = None,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the page in the browser ($BROWSER).")
    ] = False,
) -> None:
    """Write a page of a folder's images (index.html); print its path.

    Each image with its prompt, size, task id, cost and time, newest first,
    as the task history, a batch manifest or the image's own provenance
    knows it. One self-contained file (no script, nothing from the network)
    that opens from a CI artifact as it is.

    \b
        apimart gallery out/ --open
    """
    from apimart_cli import app as use_cases  # here, not at the top: start-up pays for the top
    from apimart_cli.commands.common import terminal_ui

    where = folder if folder is not None else state(ctx).settings().output_dir
    path, count = use_cases.gallery(where, terminal_ui())
    if count == 0:
        console.info(f"No images in {where} that the history, a batch or provenance knows.")
    console.data(str(path))
    if open_page:
        from apimart_cli.opening import open_files

        open_files([path], note=console.warn)
