"""`apimart download`: save the images of completed tasks."""

import typer

from apimart_cli.commands.common import (
    handles_errors,
    open_saved_files,
    read_task_ids,
    state,
)
from apimart_cli.commands.options import (
    COMMAND_TIMEOUT,
    ForceOpt,
    NoMetadataOpt,
    OpenOpt,
    OutputOpt,
    TaskIdsArg,
    TimeoutOpt,
)


@handles_errors
def download(
    ctx: typer.Context,
    task_ids: TaskIdsArg = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    open_saved: OpenOpt = False,
    no_metadata: NoMetadataOpt = False,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
) -> None:
    """Download the images of completed tasks; print each saved path.

    A task that is not completed exits 1 with its state; expired result URLs
    exit 1 with the time they expired. Existing files are kept unless --force.

    \b
        apimart download task_01K... -o out/
    """
    from apimart_cli import app as use_cases
    from apimart_cli.deadline import Deadline
    from apimart_cli.engine import WaitPlan
    from apimart_cli.progress import make_reporter, show_ending

    deadline = Deadline.after(timeout)
    app = state(ctx)
    ids = read_task_ids(task_ids, deadline)
    settings = app.settings(output, metadata=False if no_metadata else None)
    plan = WaitPlan(deadline, folder=settings.output_dir, force=force, once=True)
    waiting = use_cases.Waiting(plan, make_reporter, stamp=settings.metadata)
    outcome = use_cases.wait(settings, app.ui(), waiting, task_ids=ids)
    show_ending(outcome, timeout=timeout, resume=app.resume(output))
    if open_saved:
        open_saved_files(outcome)
    raise typer.Exit(int(outcome.exit_code))
