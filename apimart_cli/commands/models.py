"""`apimart models`: the service's models, or one model's input schema or docs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TimeoutOpt
from apimart_cli.errors import UsageError, printable


@handles_errors
def models(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="A model id: print its input schema.", show_default=False),
    ] = None,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
    kind: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--type", metavar="image|video", help="Only the models that make images, or videos."
        ),
    ] = None,
    as_json: JsonOpt = False,
    docs: Annotated[
        bool,
        typer.Option("--docs", help="With MODEL: print its documentation (Markdown) instead."),
    ] = False,
) -> None:
    """List the service's models, one id per line; with MODEL, print its input schema.

    The schema carries the model's operation: what it makes (image_generation,
    video_generation). --type keeps the models that make images, or videos.

    \b
        apimart models
        apimart models --type video
        apimart models gpt-image-2-official | jq .properties.quality
        apimart models gpt-image-2-official --docs | less
    """
    from apimart_cli import app as use_cases  # here, not at the top: start-up pays for the top
    from apimart_cli.deadline import Deadline
    from apimart_cli.schema import MODEL_KINDS

    if kind is not None and kind not in MODEL_KINDS:
        raise UsageError(f"Unknown model type {kind[:40]!r}.", "Give --type image or --type video.")
    if docs and model is None:
        raise UsageError("--docs needs a MODEL.", "apimart models MODEL --docs")
    if model is not None and model.strip():
        from apimart_cli.payload import check_model

        check_model(model)  # a name with control characters, or of a megabyte, is not sent
    app = state(ctx)
    deadline = Deadline.after(timeout)  # nothing outlasts --timeout
    if model is None:
        for item in use_cases.models(app.settings(), app.ui(), deadline=deadline, kind=kind):
            console.data_json(item) if as_json else console.data(printable(str(item["id"])))
        return
    if docs:
        from apimart_cli.schema import printable_markdown

        found = use_cases.model_docs(app.settings(), app.ui(), model, deadline=deadline)
        console.data_json(found) if as_json else console.data(printable_markdown(found))
        return
    schema = use_cases.model_schema(app.settings(), app.ui(), model, deadline=deadline)
    console.data_json(schema, indent=None if as_json else 2)
