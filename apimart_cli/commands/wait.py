"""`apimart wait`: poll tasks until they end, then download their images."""

import sys
from typing import Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import (
    handles_errors,
    ids_from_stdin,
    open_saved_files,
    previewer,
    state,
    wants_stdin,
)
from apimart_cli.commands.options import (
    DEFAULT_INTERVAL,
    WAIT_TIMEOUT,
    IntervalOpt,
    JsonOpt,
    NoMetadataOpt,
    OpenOpt,
    OutputOpt,
    PreviewOpt,
    TaskIdsArg,
    TimeoutOpt,
)
from apimart_cli.constants import DEFAULT_MAX_IN_FLIGHT
from apimart_cli.errors import UsageError

# The most --max-in-flight takes: each slot is a thread, started with the wait, so a
# number in the millions would hang the command before its first poll.
MAX_IN_FLIGHT = 256


@handles_errors
def wait(
    ctx: typer.Context,
    task_ids: TaskIdsArg = None,
    output: OutputOpt = None,
    timeout: TimeoutOpt = WAIT_TIMEOUT,
    interval: IntervalOpt = DEFAULT_INTERVAL,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight",
            min=1,
            max=MAX_IN_FLIGHT,
            help="Most status requests at once.",
        ),
    ] = DEFAULT_MAX_IN_FLIGHT,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Only wait; print the completed task ids.")
    ] = False,
    as_json: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing images.")] = False,
    pending: Annotated[
        bool,
        typer.Option("--pending", help="Also wait for every unfinished task in the history."),
    ] = False,
    open_saved: OpenOpt = False,
    preview: PreviewOpt = False,
    no_metadata: NoMetadataOpt = False,
) -> None:
    """Wait for tasks to finish and save their images.

    Prints each saved path.
    Polls every task at once. Ids piped in are polled as each line arrives,
    so wait works at the end of a pipeline:

    \b
        apimart generate "a red fox" | apimart wait -o out/
    """
    from apimart_cli import app as use_cases
    from apimart_cli.deadline import Deadline
    from apimart_cli.engine import WaitPlan
    from apimart_cli.progress import make_reporter, show_ending
    from apimart_cli.tasks import validate_task_id

    deadline = Deadline.after(timeout)
    app = state(ctx)
    ids = [] if wants_stdin(task_ids) else [validate_task_id(i) for i in task_ids or ()]
    settings = app.settings(
        output, metadata=False if no_metadata else None, preview=True if preview else None
    )
    if pending:
        ids = use_cases.pending_ids(settings, app.ui(), ids, deadline=deadline)
    stream = None
    if wants_stdin(task_ids) and not (pending and not task_ids):
        if console.is_terminal(sys.stdin):
            raise UsageError(
                "No task ids given.",
                "Pass them as arguments, pipe them in, or use --pending.",
            )
        stream = ids_from_stdin()
    if pending and not ids and stream is None:
        console.info("No unfinished tasks in the history.")
        return
    plan = WaitPlan(
        deadline,
        folder=None if no_download else settings.output_dir,
        force=force,
        interval=interval,
        max_in_flight=max_in_flight,
    )
    waiting = use_cases.Waiting(
        plan,
        lambda: make_reporter(as_json=as_json, download=not no_download),
        stamp=settings.metadata,
        previewer=previewer(settings.preview and not no_download),
    )
    outcome = use_cases.wait(settings, app.ui(), waiting, task_ids=ids, stream=stream)
    if stream is not None and outcome.task_count == 0 and not outcome.interrupted:
        refused = outcome.refused
        if refused is None:
            raise UsageError(
                "No task ids on standard input.",
                "Pipe in task ids, one per line (as `apimart generate` prints them).",
            )
        # Every line was refused, each told as it came: what a task id is, once.
        if refused.hint:
            console.warn(refused.hint)
        if as_json:
            console.error_json(refused)
        raise typer.Exit(int(refused.exit_code))
    show_ending(
        outcome,
        timeout=timeout,
        resume=app.resume(output, download=not no_download, as_json=as_json),
        downloaded=not no_download,
        as_json=as_json,
    )
    if open_saved:
        open_saved_files(outcome)
    raise typer.Exit(int(outcome.exit_code))
