"""`apimart models`: the service's models, or one model's input schema."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import JsonOpt
from apimart_cli.constants import DEFAULT_COMMAND_TIMEOUT
from apimart_cli.errors import UsageError


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
    kind: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--type", metavar="image|video", help="Only the models that make images, or videos."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the service's models, one id per line; with MODEL, print its input schema.

    The schema carries the model's operation: what it makes (image_generation,
    video_generation). --type keeps the models that make images, or videos.

    apimart models --type video
    apimart models gpt-image-2-official | jq .properties.quality
    """
    # Imported here, not at the top: every command's start-up pays for the top.
    from apimart_cli.retry import Deadline
    from apimart_cli.schema import MODEL_KINDS, model_info, models_of_kind

    if kind is not None and kind not in MODEL_KINDS:
        raise UsageError(f"Unknown model type {kind[:40]!r}.", "Give --type image or --type video.")
    app = state(ctx)
    client = app.client(app.settings(), Deadline.after(timeout))  # nothing outlasts --timeout
    with client:
        if model is None:
            listed = client.list_models()
            if kind is not None:
                listed = models_of_kind(client, listed, kind, warn=console.warn)
            for item in listed:
                console.data_json(item) if as_json else console.data(str(item["id"]))
            return
        schema = model_info(client, model, warn=console.warn)
    console.data_json(schema, indent=None if as_json else 2)
