"""`apimart status`: the state of tasks, one request each."""

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, open_history, read_task_ids, state
from apimart_cli.commands.options import JsonOpt, TaskIdsArg
from apimart_cli.errors import ApimartError, ExitCode

if TYPE_CHECKING:
    from apimart_cli.models import Task

MAX_PARALLEL_QUERIES = 8


def _row(task: "Task") -> list[str]:
    progress = "" if task.progress is None else f"{task.progress}%"
    detail = task.error_message or ""
    if task.status == "completed":
        detail = f"{len(task.images)} image(s)"
    return [task.task_id, task.status, progress, detail]


def _print_table(tasks: "list[Task]") -> None:
    from rich.console import Console  # only here: rich is slow to import
    from rich.table import Table
    from rich.text import Text

    table = Table("task", "status", "progress", "detail")
    for task in tasks:
        table.add_row(*map(Text, _row(task)))  # Text: the server's [brackets] are not markup
    Console(file=console.redacting(sys.stdout)).print(table)  # every cell, not only one


@handles_errors
def status(ctx: typer.Context, task_ids: TaskIdsArg = None, as_json: JsonOpt = False) -> None:
    """Show the state of tasks.

    On a terminal, a table; in a pipe, one tab-separated line per task, the id
    first and the status second; with --json, each task's `data` object.

        apimart status task_01K... | cut -f2
    """
    ids = read_task_ids(task_ids)
    app = state(ctx)
    with app.client(app.settings()) as client:
        if len(ids) == 1:
            results: list[Task | ApimartError] = [_query(client.get_task, ids[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(MAX_PARALLEL_QUERIES) as pool:
                results = list(pool.map(lambda i: _query(client.get_task, i), ids))
    tasks = [result for result in results if not isinstance(result, ApimartError)]
    code = ExitCode.OK
    hints: dict[str, None] = {}  # what to do, each said once after the errors
    for task_id, result in zip(ids, results, strict=True):
        if isinstance(result, ApimartError):
            console.warn(f"Error: {task_id}: {result.message}")
            code = max(code, result.exit_code)
            if result.hint:
                hints.setdefault(result.hint)
    for hint in hints:
        console.warn(hint)
    _record(tasks)
    if as_json:
        for task in tasks:
            console.data_json(dict(task.raw))
    elif console.is_terminal(sys.stdout):
        _print_table(tasks)
    else:
        for task in tasks:
            console.data("\t".join(_row(task)))
    raise typer.Exit(int(code))


def _query(get_task: "Callable[[str], Task]", task_id: str) -> "Task | ApimartError":
    try:
        return get_task(task_id)
    except ApimartError as error:
        return error


def _record(tasks: "list[Task]") -> None:
    from apimart_cli.history import task_changes

    history = open_history(required=False)
    if history is None:
        return
    with history:
        for task in tasks:
            history.update(task.task_id, **task_changes(task))
