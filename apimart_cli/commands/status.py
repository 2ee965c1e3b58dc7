"""`apimart status`: the state of tasks, one request each."""

import sys
from typing import TYPE_CHECKING

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, optional_history, read_task_ids, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TaskIdsArg, TimeoutOpt
from apimart_cli.errors import ApimartError, ExitCode, WaitTimeout

if TYPE_CHECKING:
    from apimart_cli.models import Task


def _row(task: "Task") -> list[str]:
    progress = "" if task.progress is None else f"{task.progress}%"
    detail = task.error_message or ""
    if task.status == "completed":
        detail = f"{len(task.images)} image(s)"
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

        apimart status task_01K... | cut -f2
    """
    from apimart_cli.engine import query_tasks
    from apimart_cli.retry import Deadline

    deadline = Deadline.after(timeout)
    ids = read_task_ids(task_ids, deadline)
    app = state(ctx)
    client = app.client(app.settings(), deadline)
    with optional_history() as history:
        results = query_tasks(client, ids, history=history)
    tasks = [result for result in results if not isinstance(result, ApimartError)]
    code = ExitCode.OK
    hints: dict[str, None] = {}  # what to do, each said once after the errors
    errors = []  # written at once: one line at a time, 100,000 lines overran --timeout
    for task_id, result in zip(ids, results, strict=True):
        if isinstance(result, ApimartError):
            code = max(code, result.exit_code)
            if isinstance(result, WaitTimeout):
                continue  # named together below
            errors.append(f"Error: {task_id}: {result.message}")
            if result.hint:
                hints.setdefault(result.hint)
    if errors or hints:
        console.warn("\n".join([*errors, *hints]))
    if code == ExitCode.TIMEOUT:
        late = [i for i, r in zip(ids, results, strict=True) if isinstance(r, WaitTimeout)]
        console.warn(f"Timed out after {timeout:g} s; no answer for: {' '.join(late)}")
        if not app.sandbox:
            console.warn(f"Ask again with: apimart status {' '.join(late)}")
    else:
        client.close()  # after a timeout, requests may still be on their way: left alone
    if as_json and code != ExitCode.OK:
        console.error_json(_worst(ids, results))
    if as_json:
        for task in tasks:
            console.data_json(dict(task.raw))
    elif console.is_terminal(sys.stdout):
        from apimart_cli.tables import Column, print_table

        columns = [Column("task"), Column("status"), Column("progress", right=True)]
        print_table([*columns, Column("detail", flexible=True)], [_row(task) for task in tasks])
    elif tasks:
        console.data("\n".join("\t".join(_row(task)) for task in tasks))
    raise typer.Exit(int(code))


def _worst(task_ids: list[str], results: "list[Task | ApimartError]") -> ApimartError:
    """The worst of the errors, as the one `--json` shows, naming every task it hit."""
    errors = [(i, r) for i, r in zip(task_ids, results, strict=True) if isinstance(r, ApimartError)]
    worst = max((error for _, error in errors), key=lambda error: error.exit_code)
    return ApimartError(
        f"{len(errors)} of {len(task_ids)} queries failed: {worst.message}",
        worst.hint,
        exit_code=worst.exit_code,
        task_ids=[task_id for task_id, _ in errors],
    )
