"""Tasks and their results as the API reports them, tolerant of its variants.

The service, its relays and its own client speak a wider dialect than the
documented one: `data` as an object or a one-item list, image `url` as a list
or a single string, states in any case and with synonyms (`succeeded`,
`canceled`, `in_progress`...), times as Unix seconds, milliseconds or ISO 8601
text, errors inside a 200 (`{"code": 400, "message"}`, `{"success": false}`),
and finished results in the submit reply itself (`generation.result`). Parsing
here turns all of them into one shape, so nothing else needs to care.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from apimart_cli.errors import ServiceError, UsageError, clipped, printable, shown

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
KNOWN_UNFINISHED_STATES = frozenset({"submitted", "pending", "processing"})
# States other clients and relays accept, read as the documented ones.
STATE_SYNONYMS = {
    "succeeded": "completed",
    "success": "completed",
    "succeed": "completed",
    "complete": "completed",
    "failure": "failed",
    "error": "failed",
    "canceled": "cancelled",
    "in_progress": "processing",
    "running": "processing",
    "queued": "pending",
}
# The submit reply's `data.object` when the service answers with the finished result.
SYNC_RESULT_OBJECT = "generation.result"
# Codes and types of an error that names a model problem: permanent, whatever the status.
MODEL_ERROR_CODES = frozenset({"model_not_found", "unsupported_generation_model"})

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


class ResultImage(NamedTuple):
    """One result file, an image or a video (`kind`): where to fetch it and when that
    stops working."""

    url: str
    expires_at: int | None = None
    kind: str = "image"  # or "video", from `result.videos`


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
    # Every result file, the images then the videos: each one is saved alike.
    images: tuple[ResultImage, ...] = ()
    duration: float | None = None  # a video's seconds, where the service says
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """ "video" if the result holds a video, else "image"."""
        return "video" if any(item.kind == "video" for item in self.images) else "image"

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


# A Unix time in milliseconds: anything past this many seconds (the year 5138) is one.
_MILLISECONDS_FROM = 1e11


def parse_time(value: Any) -> int | None:
    """A time as Unix seconds, from seconds, milliseconds (as numbers or digits) or ISO
    8601 text (`2026-05-01T12:00:00Z`; one without a zone is UTC); None if it is none."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return _iso_time(text)
    number = _number(value)
    if number is None or number == 0:  # 0: the field left unset
        return None
    # Before 1970 is a time all the same (an expiry long past), however far.
    return int(number / 1000 if number >= _MILLISECONDS_FROM else number)


def _iso_time(text: str) -> int | None:
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def normal_status(status: str) -> str:
    """A state read case-insensitively, its synonyms as the documented names."""
    lowered = status.strip().lower()
    return STATE_SYNONYMS.get(lowered, lowered)


class ReplyError(NamedTuple):
    """An error a reply carries whatever its HTTP status: the status it means, the
    server's message, and its code and type where it gave them."""

    status: int
    message: str | None
    code: str | None = None
    kind: str | None = None

    @property
    def names_model(self) -> bool:
        """Whether the error is a model problem (unknown or unsupported model): never load."""
        return bool({self.code, self.kind} & MODEL_ERROR_CODES)


def reply_error(payload: Any, http_status: int) -> ReplyError | None:
    """The error a JSON reply says it is, or None for a reply that is not one.

    An HTTP error always is. A 200 is when its body says so: an `error` object
    and no `data`, `success: false`, or a `code` of 400 to 599 (the status to act
    on). `{"code": 200, ...}` and a failed task's `data.error` are not."""
    if not isinstance(payload, Mapping):
        return ReplyError(http_status, None) if http_status >= 400 else None
    error = payload.get("error")
    source: Mapping[str, Any] = error if isinstance(error, Mapping) else payload
    body_code = _int(payload.get("code"))
    if body_code is None and isinstance(error, Mapping):
        body_code = _int(error.get("code"))
    status = http_status
    if http_status < 400:
        failed = (
            payload.get("success") is False
            or (body_code is not None and 400 <= body_code <= 599)
            or (isinstance(error, Mapping) and "data" not in payload)
        )
        if not failed:
            return None
        status = body_code if body_code is not None and 400 <= body_code <= 599 else 400
    message = _text(source.get("message")) or _text(source.get("msg"))
    message = message or _text(payload.get("message")) or _text(payload.get("msg"))
    if isinstance(error, str) and not message:
        message = server_text(error) or None
    code = source.get("code")
    return ReplyError(
        status,
        message,
        code=code if isinstance(code, str) and code else None,
        kind=_text(source.get("type")),
    )


def _text(value: Any) -> str | None:
    return server_text(value) if isinstance(value, str) and value.strip() else None


class Submitted(NamedTuple):
    """What a submit reply says: the task ids it created, or the finished result of a
    model that answers at once (`result`, under an id made for it), whether it was a
    replay of an earlier request with the same key, and the reply's `request_id`."""

    task_ids: list[str]
    result: Task | None = None
    replayed: bool = False
    request_id: str | None = None


def parse_submitted(reply: Any, idempotency_key: str, *, replayed: bool = False) -> Submitted:
    """A submit reply: task ids (documented list or object shape), or a synchronous
    result recorded under an id made from `request_id`, else from the key."""
    request_id = reply.get("request_id") if isinstance(reply, Mapping) else None
    request_id = request_id if isinstance(request_id, str) and request_id else None
    data = _data(reply)
    if isinstance(data, Mapping) and data.get("object") == SYNC_RESULT_OBJECT:
        task_id = result_id(request_id, idempotency_key)
        status = data.get("status")
        merged = {**data, "status": status if isinstance(status, str) and status else "completed"}
        return Submitted([task_id], parse_task({"data": merged}, task_id), replayed, request_id)
    return Submitted(parse_submission(reply), None, replayed, request_id)


# The prefix of the id made for a synchronous result, which no task on the service has.
RESULT_ID_PREFIX = "result_"
_NOT_ID_CHARS_RE = re.compile(r"[^A-Za-z0-9_-]+")


def result_id(request_id: str | None, idempotency_key: str) -> str:
    """The id a synchronous result is saved and recorded under: its request id, else the
    idempotency key, made safe as a task id (letters, digits, `_` and `-`)."""
    for source in (request_id, idempotency_key):
        safe = _NOT_ID_CHARS_RE.sub("-", source or "").strip("-")
        if safe:
            return (RESULT_ID_PREFIX + safe)[:MAX_TASK_ID_CHARS]
    return RESULT_ID_PREFIX + "unnamed"


def is_result_id(task_id: str) -> bool:
    """Whether `task_id` was made for a synchronous result (it names no task to poll)."""
    return task_id.startswith(RESULT_ID_PREFIX)


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
    """The result's files: `images`, then `videos` (the same shape: `url` a string or
    a list, `expires_at`); anything else in it (thumbnails) is not a result file."""
    if not isinstance(result, Mapping):
        return ()
    images = []
    for key, kind in (("images", "image"), ("videos", "video")):
        items = result.get(key)
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, Mapping):
                continue
            urls = item.get("url")
            if isinstance(urls, str):
                urls = [urls]
            expires_at = parse_time(item.get("expires_at"))
            for url in urls if isinstance(urls, list) else ():
                if isinstance(url, str) and url:
                    images.append(ResultImage(url, expires_at, kind))
    return tuple(images)


def _duration(data: Mapping[str, Any]) -> float | None:
    """A video's length in seconds: the task's, its result's or its first video's."""
    result = data.get("result")
    places: list[Any] = [data, result]
    if isinstance(result, Mapping) and isinstance(result.get("videos"), list):
        places.extend(result["videos"][:1])
    for place in places:
        if isinstance(place, Mapping):
            seconds = _number(place.get("duration"))
            if seconds is not None and seconds >= 0:
                return seconds
    return None


def result_summary(task: Task) -> str:
    """What a completed task made, in a few words: `2 image(s)`, `1 video(s), 4 s`."""
    text = f"{len(task.images)} {task.kind}(s)"
    if task.duration is not None:
        text += f", {task.duration:g} s"
    return text


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


def server_text(text: str) -> str:
    """A message from the service, fit to print on one line: no line breaks, no control
    characters (an escape sequence would drive the user's terminal), at most
    MAX_SERVER_TEXT characters."""
    return clipped(printable(text), MAX_SERVER_TEXT)


def parse_task(reply: Any, task_id: str) -> Task:
    """A `GET /v1/tasks/{id}` reply as a Task."""
    data = _one_object(_data(reply))
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise ServiceError(f"The service sent no status for task {task_id}.")
    progress = _int(data.get("progress"))
    return Task(
        task_id=task_id,  # the id polled: the reply's own could be anything (or another task)
        status=server_text(normal_status(status)),
        progress=progress,
        estimated_time=_number(data.get("estimated_time")),
        created=parse_time(data.get("created")),
        cost=_number(data.get("cost")),
        error_message=_error_message(data),
        images=_images(data.get("result")),
        duration=_duration(data),
        raw=data,
    )


# How long a task last seen "submitted" is shown so once its time since submission runs
# on: the service starts on a task within seconds, and polls are aimed at its end, so a
# poll may not catch it processing.
SUBMITTED_SHOWN_SECONDS = 3.0


def waiting_label(task: Task, *, now: float, seen: float) -> tuple[str, float | None]:
    """A running task's label and bar (0-1; None to pulse) at wall time `now`, from the
    reply seen at wall time `seen`: moving between polls, timed from the submission.

    Where the service gave an estimate, the time left on it; past it, a revised one
    (from the progress, else half as long again), marked `now`.
    """
    state, progress = task.status, task.progress
    if not task.known_status:
        return f"{state} (unknown state; waiting)", None
    elapsed = None if task.created is None else max(now - task.created, 0.0)
    estimate = task.estimated_time or None
    guessed = False  # the percentage is the clock's, not the service's
    if (
        state == "submitted"
        and elapsed is not None
        and now - seen >= SUBMITTED_SHOWN_SECONDS
        and elapsed >= SUBMITTED_SHOWN_SECONDS
    ):
        state = "processing"
    # The service's own progress, once it has some, says more than its estimate.
    seen_elapsed = max(seen - (task.created or seen), 0.0)
    if estimate and task.progress and 10 <= task.progress < 100 and seen_elapsed > 0:
        estimate = seen_elapsed * 100 / task.progress
    if state == "processing" and elapsed is not None and estimate:
        by_time = min(int(100 * elapsed / estimate), 99)
        if progress is None or by_time > progress:
            progress, guessed = by_time, True
    label = state
    if state == "processing" and progress is not None:
        label += f" {'~' if guessed else ''}{progress}%"
    fraction = None if progress is None else progress / 100
    if elapsed is None or not estimate:
        return label, fraction
    if estimate - elapsed >= 0.5:
        return f"{label}, ~{estimate - elapsed:.0f} s left", fraction
    # Past the estimate: revised, half as long again each time it runs out.
    while estimate - elapsed < 0.5:
        estimate = max(estimate * 1.5, estimate + 1)
    return f"{label}, now ~{estimate - elapsed:.0f} s left", fraction
