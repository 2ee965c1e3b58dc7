"""`apimart upload`: upload local images and print their URLs."""

from __future__ import annotations

from typing import Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TimeoutOpt


@handles_errors
def upload(
    ctx: typer.Context,
    files: Annotated[
        list[str], typer.Argument(help="PNG, JPEG, WebP or GIF files, at most 20 MiB each.")
    ],
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """Upload images and print each one's URL (valid for 72 hours).

    Every file is checked before any is sent. A file uploaded before, whose URL
    still has time to live, is not sent again.

    \b
        apimart upload sketch.png | xargs -I{} apimart generate "ink it" -i {}
    """
    from apimart_cli import app as use_cases  # here, not at the top: start-up pays for the top
    from apimart_cli.deadline import Deadline

    app = state(ctx)
    deadline = Deadline.after(timeout)  # nothing outlasts --timeout
    for obj in use_cases.upload(app.settings(), app.ui(), files, deadline=deadline):
        if as_json:
            console.data_json(obj)
        else:
            console.data(str(obj["url"]))
