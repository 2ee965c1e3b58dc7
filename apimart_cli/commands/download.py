"""`apimart download`: save the images of completed tasks."""

import typer

from apimart_cli.commands.common import handles_errors, read_task_ids, state
from apimart_cli.commands.options import ForceOpt, NoMetadataOpt, OpenOpt, OutputOpt, TaskIdsArg


@handles_errors
def download(
    ctx: typer.Context,
    task_ids: TaskIdsArg = None,
    output: OutputOpt = None,
    force: ForceOpt = False,
    open_saved: OpenOpt = False,
    no_metadata: NoMetadataOpt = False,
) -> None:
    """Download the images of completed tasks; print each saved path.

    A task that is not completed exits 1 with its state; expired result URLs
    exit 1 with the time they expired. Existing files are kept unless --force.

        apimart download task_01K... -o out/
    """
    from apimart_cli.commands.wait import run_wait

    ids = read_task_ids(task_ids)
    code = run_wait(
        state(ctx),
        ids,
        output=output,
        force=force,
        once=True,
        metadata=False if no_metadata else None,
        open_saved=open_saved,
    )
    raise typer.Exit(int(code))
