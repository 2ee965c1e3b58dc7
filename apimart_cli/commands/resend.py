"""`apimart resend`: send submissions whose outcome is unknown again, with their keys."""

from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TimeoutOpt
from apimart_cli.errors import ApimartError, ExitCode


@handles_errors
def resend(
    ctx: typer.Context,
    keys: Annotated[
        Optional[list[str]],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(
            help="Idempotency keys; with none, every submission whose outcome is unknown.",
            metavar="KEY...",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
) -> None:
    """Resend submissions whose outcome is unknown, with their keys; print task ids.

    Each goes with its own idempotency key and exactly the body first sent with it.
    The service answers with the task it already made, or makes it once. Prints
    the task ids, one per line, and records them in the history.

        apimart resend | apimart wait -o out/
    """
    from apimart_cli import app as use_cases  # here, not at the top: start-up pays for the top
    from apimart_cli.deadline import Deadline

    app = state(ctx)
    settings = app.settings()
    failures: list[ApimartError] = []
    count = 0

    def give(task_id: str, key: str) -> None:
        if as_json:
            console.data_json({"task_id": task_id, "status": "submitted", "idempotency_key": key})
        else:
            console.data(task_id)

    # A bad key: exit 2, nothing sent.
    for result in use_cases.resend(
        settings, app.ui(), keys or [], deadline=Deadline.after(timeout)
    ):
        count += 1
        if result.error is not None:
            failures.append(result.error)
            for task_id in result.error.task_ids:  # made, but not recorded: still given
                give(task_id, result.key)
            console.warn(f"Error: {result.key}: {result.error.message}")
            if result.error.hint:
                console.warn(result.error.hint)
            continue
        for task_id in result.task_ids:
            give(task_id, result.key)
    if not count:
        console.info(f"Nothing to resend: no submission to {settings.base_url} is unknown.")
    if not failures:
        return
    worst = max(failures, key=lambda error: error.exit_code)
    if as_json:
        console.error_json(worst)
    raise typer.Exit(int(max(worst.exit_code, ExitCode.OK)))
