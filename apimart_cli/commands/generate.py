"""`apimart generate`: submit one generation task."""

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import (
    handles_errors,
    open_saved_files,
    previewer,
    state,
    stdin_text,
)
from apimart_cli.commands.options import (
    COMMAND_TIMEOUT,
    DEFAULT_INTERVAL,
    MAX_SECONDS,
    WAIT_TIMEOUT,
    IntervalOpt,
    JsonOpt,
    NoMetadataOpt,
    OpenOpt,
    OutputOpt,
    ParamOpt,
    PreviewOpt,
    RefsOpt,
    a_number,
)
from apimart_cli.constants import DEFAULT_MODEL
from apimart_cli.errors import UsageError

if TYPE_CHECKING:
    from apimart_cli.deadline import Deadline


def _complete_size(incomplete: str) -> list[str]:
    from apimart_cli.sizes import SIZE_CHOICES

    return [size for size in SIZE_CHOICES if size.startswith(incomplete)]


def _complete_resolution(incomplete: str) -> list[str]:
    from apimart_cli.sizes import RESOLUTIONS

    return [value for value in RESOLUTIONS if value.startswith(incomplete)]


def read_prompt(prompt: str | None, deadline: "Deadline | None" = None) -> str:
    """The prompt argument, or standard input for '-' or when it is piped in, read
    until its end or `deadline` (a WaitTimeout: nothing is sent).

    A prompt read from standard input loses its surrounding blank space: the
    newline `echo` adds is not part of what the user asked for.
    """
    if prompt is not None and prompt != "-":
        return prompt
    if prompt is None and console.is_terminal(sys.stdin):
        raise UsageError(
            "No prompt given.", 'Pass it as an argument: apimart generate "a red fox".'
        )
    return stdin_text(deadline).strip()


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was typed on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)  # by name: Typer carries its own Click
    return source is not None and source.name == "COMMANDLINE"


@handles_errors
def generate(
    ctx: typer.Context,
    prompt: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="What to draw; '-' (or a pipe) reads it from standard input."),
    ] = None,
    size: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--size",
            "-s",
            help="auto, a ratio such as 16:9, or pixels WxH (see `apimart sizes`).",
            autocompletion=_complete_size,
            show_default=False,
        ),
    ] = None,
    resolution: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--resolution",
            "-r",
            help="1k, 2k or 4k.",
            autocompletion=_complete_resolution,
            show_default=False,
        ),
    ] = None,
    n: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--n", "-n", help="Images to make, 1 to 10. [default: 1]", show_default=False),
    ] = None,
    force_size: Annotated[
        bool,
        typer.Option("--force-size", help="Send a pixel size under 64 a side (as 16x9) as given."),
    ] = False,
    image: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--image",
            "-i",
            help="A reference image: a file, an http(s) URL or a data: URI. Up to 16.",
            show_default=False,
        ),
    ] = None,
    official_fallback: Annotated[
        bool, typer.Option("--official-fallback", help="Fall back to the official channel.")
    ] = False,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="The model; another than gpt-image-2 is checked against its schema."
        ),
    ] = DEFAULT_MODEL,
    param: ParamOpt = None,
    refs: RefsOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Then wait and download, as `apimart wait`.")
    ] = False,
    output: OutputOpt = None,
    timeout: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--timeout",
            min=0.0,
            max=MAX_SECONDS,
            callback=a_number,
            help="Seconds for the whole command; then it stops and exits 124. "
            f"[default: {COMMAND_TIMEOUT:g}; {WAIT_TIMEOUT:g} with --wait]",
            show_default=False,
        ),
    ] = None,
    interval: IntervalOpt = DEFAULT_INTERVAL,
    as_json: JsonOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the request body; send nothing.")
    ] = False,
    open_saved: OpenOpt = False,
    preview: PreviewOpt = False,
    no_metadata: NoMetadataOpt = False,
) -> None:
    """Submit a generation task and print its id.

    The id is written to the local history before it is printed.

    \b
        apimart generate "a lighthouse at dawn" -s 16:9 -r 2k --wait -o out/
        apimart generate "ink it" -i sketch.png --refs upload
        apimart generate "a fox" --model gpt-image-2-official --param quality=high
    """
    from apimart_cli.deadline import Deadline
    from apimart_cli.payload import build_request, parse_params

    seconds = timeout if timeout is not None else WAIT_TIMEOUT if wait else COMMAND_TIMEOUT
    deadline = Deadline.after(seconds)  # the whole command: reading, submitting, waiting
    app = state(ctx)
    request = build_request(
        read_prompt(prompt, deadline),
        model=model,
        size=size,
        resolution=resolution,
        n=n,
        images=image or (),
        official_fallback=official_fallback,
        params=parse_params(param or ()),
        force_size=force_size,
    )
    for note in request.notes:
        console.info(f"Note: {note}")
    only_with_wait = {
        "-o/--output": _given(ctx, "output"),
        "--interval": _given(ctx, "interval"),
        "--open": open_saved,
        "--preview": preview,
        "--no-metadata": no_metadata,
    }
    ignored = [flag for flag, given in only_with_wait.items() if given and not wait]
    if ignored:
        verb = "applies" if len(ignored) == 1 else "apply"
        console.warn(f"Note: {', '.join(ignored)} only {verb} with --wait; ignored.")
    if dry_run:
        console.data_json(request.dry_run(), indent=2)
        return
    from apimart_cli import app as use_cases
    from apimart_cli.errors import SubmittedButUnrecorded

    settings = app.settings(
        output,
        references=refs,
        metadata=False if no_metadata else None,
        preview=True if preview else None,
    )
    waiting = None
    if wait:
        from apimart_cli.engine import WaitPlan
        from apimart_cli.progress import make_reporter

        waiting = use_cases.Waiting(
            WaitPlan(deadline, folder=settings.output_dir, interval=interval),
            lambda: make_reporter(as_json=as_json),
            stamp=settings.metadata,
            previewer=previewer(settings.preview),
        )

    def submitted(task_ids: list[str]) -> None:
        for task_id in task_ids:
            if wait:
                console.info(task_id)  # standard output is for the saved paths; -q: nothing
            elif as_json:
                console.data_json({"task_id": task_id, "status": "submitted"})
            else:
                console.data(task_id)

    try:
        generated = use_cases.generate(
            request, settings, app.ui(), deadline=deadline, waiting=waiting, on_submitted=submitted
        )
    except SubmittedButUnrecorded as error:
        for task_id in error.task_ids:  # paid for: the pipeline gets them all the same
            console.data(task_id)
        raise
    outcome = generated.outcome
    if outcome is None:
        return
    from apimart_cli.progress import show_ending

    show_ending(
        outcome, timeout=seconds, resume=app.resume(output, as_json=as_json), as_json=as_json
    )
    if open_saved:
        open_saved_files(outcome)
    raise typer.Exit(int(outcome.exit_code))
