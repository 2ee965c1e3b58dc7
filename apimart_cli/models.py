"""Tasks and their results as the API reports them, tolerant of its variants.

The service sends `data` as an object or a one-item list, image `url` as a list
or a single string, and states beyond the documented ones (api.md). Parsing
here turns all of them into one shape, so nothing else needs to care.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apimart_cli.errors import ServiceError, UsageError

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
KNOWN_UNFINISHED_STATES = frozenset({"submitted", "pending", "processing"})

# Task ids go into a URL path: letters, digits, `_` and `-` only.
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def validate_task_id(task_id: str) -> str:
    """Return the id stripped, or raise UsageError if it cannot be a task id."""
    value = task_id.strip()
    if not _TASK_ID_RE.match(value):
        raise UsageError(
            f"Invalid task id {task_id!r}.",
            "A task id has only letters, digits, '_' and '-', such as task_01KPQ7J7DW...",
        )
    return value


@dataclass(frozen=True)
class ResultImage:
    """One result image: where to fetch it and when that stops working."""

    url: str
    expires_at: int | None = None


@dataclass(frozen=True)
class Task:
    """A task's state, as `GET /v1/tasks/{id}` describes it."""

    task_id: str
    status: str
    progress: int | None = None
    estimated_time: float | None = None
    created: int | None = None
    cost: float | None = None
    error_message: str | None = None
    images: tuple[ResultImage, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def known_status(self) -> bool:
        return self.status in FINAL_STATES or self.status in KNOWN_UNFINISHED_STATES


def _data(reply: Any) -> Any:
    if not isinstance(reply, Mapping) or "data" not in reply:
        raise ServiceError("The service sent a reply without a `data` field.")
    return reply["data"]


def _one_object(data: Any) -> Mapping[str, Any]:
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0]
    if isinstance(data, Mapping):
        return data
    raise ServiceError("The service sent a reply whose `data` is not an object.")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def parse_submission(reply: Any) -> list[str]:
    """The task ids of a submit reply, documented (list) or object shape."""
    data = _data(reply)
    items = data if isinstance(data, list) else [data]
    ids = []
    for item in items:
        task_id = item.get("task_id") or item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(task_id, str) or not task_id:
            raise ServiceError("The service accepted the request but sent no task id.")
        ids.append(task_id)
    if not ids:
        raise ServiceError("The service accepted the request but sent no task id.")
    return ids


def _images(result: Any) -> tuple[ResultImage, ...]:
    if not isinstance(result, Mapping):
        return ()
    images = []
    for item in result.get("images") or ():
        if not isinstance(item, Mapping):
            continue
        urls = item.get("url")
        if isinstance(urls, str):
            urls = [urls]
        expires_at = _int(item.get("expires_at"))
        for url in urls if isinstance(urls, list) else ():
            if isinstance(url, str) and url:
                images.append(ResultImage(url, expires_at))
    return tuple(images)


def _error_message(data: Mapping[str, Any]) -> str | None:
    error = data.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        return str(message) if message else None
    if isinstance(error, str) and error:
        return error
    return None


def parse_task(reply: Any, task_id: str) -> Task:
    """A `GET /v1/tasks/{id}` reply as a Task."""
    data = _one_object(_data(reply))
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise ServiceError(f"The service sent no status for task {task_id}.")
    progress = _int(data.get("progress"))
    return Task(
        task_id=str(data.get("id") or data.get("task_id") or task_id),
        status=status.lower(),
        progress=progress,
        estimated_time=_number(data.get("estimated_time")),
        created=_int(data.get("created")),
        cost=_number(data.get("cost")),
        error_message=_error_message(data),
        images=_images(data.get("result")),
        raw=data,
    )
