"""Each task's state asked once: what `status` does, apart from the engine.

The engine waits, polls and downloads; a one-line `status` needs none of that,
so it lives here and a `status` imports neither the engine nor what the engine
brings (its plans, queues and the poller), which is start-up time it would pay
on every run (docs/benchmarks.md). The engine fetches through `fetch_task` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from apimart_cli.constants import MAX_PARALLEL_QUERIES
from apimart_cli.errors import ApimartError, WaitTimeout

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.tasks import Task


def fetch_task(client: Client, task_id: str) -> Task:
    """The task's state, under the id it was polled by, whatever id the reply gives:
    files are named and states recorded by the id the user has."""
    task = client.get_task(task_id)
    if task.task_id == task_id:
        return task
    from dataclasses import replace

    return replace(task, task_id=task_id)


def query_tasks(
    client: Client, task_ids: Sequence[str], *, history: History | None = None
) -> list[Task | ApimartError]:
    """`status`: each task's state (or the error in its way), asked at once, at most
    MAX_PARALLEL_QUERIES at a time, and recorded in the history. An id with no answer
    by the client's deadline gets a WaitTimeout (exit 124); nothing waits past it."""
    from apimart_cli.workers import map_within

    def ask(task_id: str) -> Task:
        return fetch_task(client, task_id)

    def record(index: int, outcome: tuple[bool, object]) -> None:
        # Recorded as each answer comes, while there is time: the history only mirrors
        # the service, and a hundred thousand writes after the deadline would overrun it.
        ok, answer = outcome
        if history is not None and ok and not client.deadline.expired():
            from apimart_cli.history import task_changes

            task = cast("Task", answer)
            history.update(task.task_id, **task_changes(task))

    outcomes, _ = map_within(
        client.deadline,
        ask,
        task_ids,
        workers=MAX_PARALLEL_QUERIES,
        name="status",
        on_answer=record,
    )
    results: dict[int, Task | ApimartError] = {}
    for index, (ok, value) in outcomes.items():
        if ok or isinstance(value, ApimartError):
            results[index] = value
        else:  # a bug: report it, the others are answered all the same
            results[index] = ApimartError(f"Internal error while asking: {value!r}")
    late = WaitTimeout("Out of time waiting for the service's answer.")
    return [results.get(index, late) for index in range(len(task_ids))]
