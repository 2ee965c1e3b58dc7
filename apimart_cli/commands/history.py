"""`apimart history`: the tasks submitted from this machine."""

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, open_history
from apimart_cli.commands.options import JsonOpt

if TYPE_CHECKING:
    from apimart_cli.history import TaskRecord


def _row(record: "TaskRecord") -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
    task = record.task_id or f"(unknown; key {record.idempotency_key})"
    prompt = " ".join(record.prompt.split())
    return [task, when, record.state, prompt, " ".join(record.files)]


def _as_json(record: "TaskRecord") -> dict[str, object]:
    return {
        "task_id": record.task_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "base_url": record.base_url,
        "state": record.state,
        "prompt": record.prompt,
        "fields": record.fields,
        "idempotency_key": record.idempotency_key,
        "cost": record.cost,
        "files": list(record.files),
        "error": record.error,
    }


@handles_errors
def history(
    pending: Annotated[bool, typer.Option("--pending", help="Only unfinished tasks.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List the tasks submitted from here, newest first.

    Each with its id, time, state, prompt and saved files.
    `apimart wait --pending` resumes every unfinished one.

        apimart history --pending
    """
    with open_history() as log:
        records = log.list(pending_only=pending, limit=limit)
    if as_json:
        for record in records:
            console.data_json(_as_json(record))
    elif console.is_terminal(sys.stdout):
        from rich.console import Console  # only here: rich is slow to import
        from rich.table import Table
        from rich.text import Text

        table = Table("task", "submitted", "state", "prompt", "files")
        for record in records:
            table.add_row(*map(Text, _row(record)))  # Text: a prompt's [brackets] are not markup
        Console().print(table)
    else:
        for record in records:
            console.data("\t".join(_row(record)))
