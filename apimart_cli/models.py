"""Tasks and their results as the API reports them, tolerant of its variants.

The service sends `data` as an object or a one-item list, image `url` as a list
or a single string, and states beyond the documented six (`submitted`,
`pending`, `processing`; `completed`, `failed`, `cancelled`). Parsing
here turns all of them into one shape, so nothing else needs to care.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apimart_cli.errors import ServiceError, UsageError, clipped, shown

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
KNOWN_UNFINISHED_STATES = frozenset({"submitted", "pending", "processing"})

# Task ids go into a URL path and file names, and are printed to be passed back as
# arguments: letters, digits, `_` and `-` only, and never a `-` first (`-rf`, an option).
MAX_TASK_ID_CHARS = 128
_TASK_ID_RE = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_-]{{0,{MAX_TASK_ID_CHARS - 1}}}")


def is_task_id(value: object) -> bool:
    """Whether `value` can be a task id: letters, digits, `_` and `-`, 1 to 128 of them,
    not starting with `-`."""
    # fullmatch, not match with $: "$" also matches before a final newline.
    return isinstance(value, str) and _TASK_ID_RE.fullmatch(value) is not None


def validate_task_id(task_id: str) -> str:
    """Return the id stripped, or raise UsageError if it cannot be a task id."""
    value = task_id.strip()
    if not is_task_id(value):
        raise UsageError(
            f"Invalid task id {shown(task_id)}.",
            "A task id has only letters, digits, '_' and '-' (not first), such as "
            "task_01KPQ7J7DW...",
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
    try:
        number = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return number if math.isfinite(number) else None  # JSON's 1e999 is infinity


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
        if not is_task_id(task_id):  # never printed or stored: a newline, `../`, a key...
            raise ServiceError(
                f"The service sent a task id that cannot be one ({len(task_id)} characters, "
                "not only letters, digits, '_' and '-', or '-' first)."
            )
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
        return server_text(str(message)) if message else None
    if isinstance(error, str) and error:
        return server_text(error)
    return None


# The most of a server's message that is shown: a reason is a sentence, not a megabyte.
MAX_SERVER_TEXT = 500
_LINE_BREAKS_RE = re.compile(r"[\t\n\v\f\r]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def server_text(text: str) -> str:
    """A message from the service, fit to print on one line: no line breaks, no control
    characters (an escape sequence would drive the user's terminal), at most
    MAX_SERVER_TEXT characters."""
    return clipped(_CONTROL_RE.sub("?", _LINE_BREAKS_RE.sub(" ", text)), MAX_SERVER_TEXT)


def parse_task(reply: Any, task_id: str) -> Task:
    """A `GET /v1/tasks/{id}` reply as a Task."""
    data = _one_object(_data(reply))
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise ServiceError(f"The service sent no status for task {task_id}.")
    progress = _int(data.get("progress"))
    return Task(
        task_id=task_id,  # the id polled: the reply's own could be anything (or another task)
        status=server_text(status.lower()),
        progress=progress,
        estimated_time=_number(data.get("estimated_time")),
        created=_int(data.get("created")),
        cost=_number(data.get("cost")),
        error_message=_error_message(data),
        images=_images(data.get("result")),
        raw=data,
    )
