"""`apimart history`: the tasks submitted from this machine."""

import sys
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors
from apimart_cli.commands.common import state as app_state
from apimart_cli.commands.options import JsonOpt
from apimart_cli.errors import UsageError

if TYPE_CHECKING:
    from apimart_cli.history import TaskRecord

# The states a task can be in, for --state (models.FINAL_STATES and the unfinished ones).
STATES = (
    "submitting",
    "submitted",
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
    "unknown",
)


def _cost(cost: float | None) -> str:
    from apimart_cli.costs import cost_text

    return "" if cost is None else cost_text(cost)


def _row(record: "TaskRecord") -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
    task = record.task_id or f"(unknown; key {record.idempotency_key})"
    prompt = " ".join(record.prompt.split())
    where = "sandbox" if record.sandbox else ""
    return [task, when, record.state, prompt, " ".join(record.files), _cost(record.cost), where]


def _kind(record: "TaskRecord") -> str:
    """What a video task's state cell adds: ", video" and its length where known."""
    if record.kind != "video":
        return ""
    return ", video" + ("" if record.duration is None else f" {record.duration:g} s")


def _as_json(record: "TaskRecord") -> dict[str, object]:
    found = {"request_id": record.request_id} if record.request_id else {}
    return {
        "task_id": record.task_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "base_url": record.base_url,
        "sandbox": record.sandbox,
        "state": record.state,
        "kind": record.kind,
        "duration": record.duration,
        "saved": record.saved,
        "expires_at": record.expires_at,
        "prompt": record.prompt,
        "fields": record.fields,
        "idempotency_key": record.idempotency_key,
        "cost": record.cost,
        "files": list(record.files),
        "error": record.error,
        **found,  # the submit reply's request id, to quote to the vendor
    }


def _states(given: list[str]) -> list[str]:
    """--state values (repeatable, or comma-separated), checked against the known states."""
    states = [part.strip().lower() for value in given for part in value.split(",")]
    for state in states:
        if state not in STATES:
            raise UsageError(f"Unknown state {state[:40]!r}.", f"States are: {', '.join(STATES)}.")
    return list(dict.fromkeys(states))


# SQLite's largest integer: a --limit past it (a 30-digit number) means "all", and as
# given it would not fit the query.
_MOST_ROWS = 2**63 - 1


@handles_errors
def history(
    ctx: typer.Context,
    pending: Annotated[
        bool,
        typer.Option(
            "--pending",
            help="Only what `wait --pending` picks up: unfinished, or never saved, "
            "sent to the current base URL.",
        ),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    since: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Option(
            "--since", metavar="WHEN", help="Submitted since a date (2026-11-30) or for 2h, 3d..."
        ),
    ] = None,
    search: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--search", metavar="TEXT", help="Whose prompt holds TEXT (any case)."),
    ] = None,
    state: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--state", help=f"In this state (repeatable): {', '.join(STATES)}."),
    ] = None,
    forget_sandbox: Annotated[
        bool,
        typer.Option(
            "--forget-sandbox", help="Remove the tasks sent to a sandbox (a loopback base URL)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the tasks submitted from here, newest first, with a total of their cost.

    Each with its full id, time, state, prompt, saved files (absolute paths) and
    cost; tasks sent to a sandbox are marked. `apimart wait --pending` resumes
    every pending one.

    \b
        apimart history --since 2h --search fox
        apimart history --state failed --json
        apimart history --forget-sandbox
    """
    from apimart_cli import app as use_cases
    from apimart_cli.commands.common import terminal_ui

    if forget_sandbox:
        removed = use_cases.forget_sandbox(terminal_ui())
        console.info(f"Forgot {removed} sandbox task{'s' * (removed != 1)}.")
        return
    from apimart_cli.history import parse_since

    states = _states(state or [])
    after = parse_since(since) if since is not None else None
    # --pending is exactly what `wait --pending` picks up: the same query, so the two agree.
    base_url = app_state(ctx).settings().base_url if pending else None
    records = use_cases.history_records(
        terminal_ui(),
        pending=pending,
        limit=min(limit, _MOST_ROWS),
        since=after,
        search=search,
        states=states,
        base_url=base_url,
    )
    if pending:
        counts = use_cases.pending_counts(terminal_ui(), since=after, search=search, states=states)
        _say_what_else_is_pending({url: n for url, n in counts.items() if url != base_url})
    if pending and any(record.task_id is None for record in records):
        console.warn(
            "A submission with no task id may still have created a task (it was cut short, "
            "or its reply was lost): `apimart resend KEY` sends it again with its "
            "idempotency key, and the service answers with its task or makes it once."
        )
    # A sandbox's costs are make-believe: listed, never summed with what was paid.
    costs = [r.cost for r in records if r.cost is not None and not r.sandbox]
    sandboxed = sum(record.sandbox for record in records)
    total = sum(costs)
    # A total of 0 where only a sandbox reported costs; none where nothing did.
    reported = bool(costs) or any(r.cost is not None for r in records)
    if as_json:
        for record in records:
            console.data_json(_as_json(record))
        if not console.is_quiet():
            console.warn(_total_json(len(records), total if reported else None))
        return
    rows = [_row(record) for record in records]
    if console.is_terminal(sys.stdout) and rows:
        from apimart_cli.tables import Column, print_table

        columns = [
            Column("task"),
            Column("submitted"),
            Column("state"),
            Column("prompt", flexible=True),
            Column("files", flexible=True, wrap=True),
            Column("cost", right=True),
        ]
        table = [
            [row[0], row[1], f"{row[2]}{_kind(record)}{' (sandbox)' if row[6] else ''}", *row[3:6]]
            for record, row in zip(records, rows, strict=True)
        ]
        print_table(columns, table)
    else:
        for row in rows:
            console.data("\t".join(row))
    console.info(_total_line(len(records), len(costs), total, sandboxed, reported))


def _say_what_else_is_pending(others: dict[str, int]) -> None:
    """The unfinished tasks `wait --pending` leaves out here (how many, by the base URL
    each went to), and why."""
    from apimart_cli.settings import is_sandbox_url

    sandboxed = sum(count for url, count in others.items() if is_sandbox_url(url))
    if sandboxed:
        console.info(
            f"Not listed: {sandboxed} unfinished task(s) sent to a sandbox, which ended "
            "with it; `apimart history --forget-sandbox` removes them."
        )
    urls = sorted(url for url in others if not is_sandbox_url(url))
    if urls:
        count = sum(others.values()) - sandboxed
        console.info(
            f"Not listed: {count} unfinished task(s) sent to {', '.join(urls)}; "
            "wait for them with `apimart --base-url URL wait --pending`."
        )


def _total_line(
    listed: int, with_cost: int, total: float, sandboxed: int = 0, reported: bool = False
) -> str:
    from apimart_cli.costs import cost_text

    tasks = f"{listed} task{'s' * (listed != 1)}"
    aside = f"; {sandboxed} sent to a sandbox, not counted" if sandboxed else ""
    if not with_cost and not reported:
        return f"{tasks}, no cost reported{aside}."
    unknown = listed - with_cost - sandboxed
    without = f" ({unknown} without a cost reported)" if unknown else ""
    return f"{tasks}, cost {cost_text(total)} in all{without}{aside}."


def _total_json(listed: int, total: float | None) -> str:
    import json

    from apimart_cli.costs import cost_number

    cost = None if total is None else cost_number(total)
    return json.dumps({"total": {"tasks": listed, "cost": cost}})
