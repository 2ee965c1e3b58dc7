"""`apimart models`: the service's models, or one model's input schema."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import JsonOpt
from apimart_cli.constants import DEFAULT_COMMAND_TIMEOUT


@handles_errors
def models(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="A model id: print its input schema.", show_default=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.0, help="Seconds for the whole command.")
    ] = DEFAULT_COMMAND_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """List the service's models, one id per line; with MODEL, print its input schema.

    \b
        apimart models
        apimart models gpt-image-2-official | jq .properties.quality
    """
    # Imported here, not at the top: every command's start-up pays for the top.
    from apimart_cli.retry import Deadline
    from apimart_cli.schema import model_info

    app = state(ctx)
    client = app.client(app.settings(), Deadline.after(timeout))  # nothing outlasts --timeout
    with client:
        if model is None:
            from apimart_cli.cache import remember_models

            listed = list(client.list_models())
            for item in listed:
                console.data_json(item) if as_json else console.data(str(item["id"]))
            remember_models([str(item["id"]) for item in listed])  # for shell completion
            return
        schema = model_info(client, model, warn=console.warn)
    console.data_json(schema, indent=None if as_json else 2)
