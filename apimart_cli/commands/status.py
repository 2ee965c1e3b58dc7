"""`apimart status`: the state of tasks, one request each."""

import sys
from typing import TYPE_CHECKING

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, read_task_ids, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TaskIdsArg, TimeoutOpt
from apimart_cli.errors import ExitCode, WaitTimeout

if TYPE_CHECKING:
    from apimart_cli.tasks import Task


def _row(task: "Task") -> list[str]:
    progress = "" if task.progress is None else f"{task.progress}%"
    detail = task.error_message or ""
    if task.status == "completed":
        from apimart_cli.tasks import result_summary

        detail = result_summary(task)
    return [task.task_id, task.status, progress, detail]


@handles_errors
def status(
    ctx: typer.Context,
    task_ids: TaskIdsArg = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
) -> None:
    """Show the state of tasks.

    On a terminal, a table; in a pipe, one tab-separated line per task, the id
    first and the status second; with --json, each task's `data` object.

    \b
        apimart status task_01K... | cut -f2
    """
    from apimart_cli import app as use_cases
    from apimart_cli.deadline import Deadline

    deadline = Deadline.after(timeout)
    ids = read_task_ids(task_ids, deadline)
    app = state(ctx)
    result = use_cases.status(app.settings(), app.ui(), ids, deadline=deadline)
    # Written at once: one line at a time, 100,000 lines overran --timeout.
    errors = [
        f"Error: {task_id}: {error.message}"
        for task_id, error in result.errors
        if not isinstance(error, WaitTimeout)  # named together below
    ]
    if errors or result.hints:
        console.warn("\n".join([*errors, *result.hints]))
    if result.exit_code == ExitCode.TIMEOUT:
        late = " ".join(
            task_id for task_id, error in result.errors if isinstance(error, WaitTimeout)
        )
        console.warn(f"Timed out after {timeout:g} s; no answer for: {late}")
        if not app.sandbox:
            console.warn(f"Ask again with: apimart status {late}")
    worst = result.worst()
    if as_json and worst is not None:
        console.error_json(worst)
    if as_json:
        for task in result.tasks:
            console.data_json(dict(task.raw))
    elif console.is_terminal(sys.stdout):
        from apimart_cli.tables import Column, print_table

        columns = [Column("task"), Column("status"), Column("progress", right=True)]
        rows = [_row(task) for task in result.tasks]
        print_table([*columns, Column("detail", flexible=True)], rows)
    elif result.tasks:
        console.data("\n".join("\t".join(_row(task)) for task in result.tasks))
    raise typer.Exit(int(result.exit_code))
