"""What the sandbox remembers: tasks and their timeline, and uploaded files.

A task's status is never stored: it is read off the clock. A task is "submitted"
for the first tenth of its duration, "processing" until its duration has passed,
then final ("completed", "failed" or "cancelled"), so moving the clock forward
moves every task forward.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import secrets
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from apimart_cli.constants import VIDEO_OPERATION
from apimart_cli.sandbox.config import SandboxConfig
from apimart_cli.sandbox.rules import VIDEO_PIXELS, operation_of, output_pixels

# Task ids: "task_01K" and 23 Crockford base32 characters, like the service's.
TASK_ID_PREFIX = "task_01K"
TASK_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TASK_ID_RANDOM_CHARS = 23
# The share of a task's duration it spends "submitted" before "processing".
SUBMITTED_SHARE = 0.1
# Made-up prices per image (credits are ten times the cost, as in APIMart's example replies).
COST_PER_IMAGE = {"1k": 0.05, "2k": 0.08, "4k": 0.12}
COST_PER_VIDEO_SECOND = 0.1
DEFAULT_VIDEO_SECONDS = 4
CREDITS_PER_COST = 10
# A result URL whose last part tries to climb out of the user's output folder.
HOSTILE_URL_PREFIX = "..%2F..%2F"
# `SandboxConfig.state_synonyms`: each state as relays and other clients spell it.
STATE_SYNONYMS = {
    "submitted": "QUEUED",
    "processing": "IN_PROGRESS",
    "completed": "SUCCEEDED",
    "failed": "FAILURE",
    "cancelled": "CANCELED",
}
_TIME_FIELDS = ("created", "completed")


def new_task_id() -> str:
    return TASK_ID_PREFIX + "".join(
        secrets.choice(TASK_ID_ALPHABET) for _ in range(TASK_ID_RANDOM_CHARS)
    )


@dataclass
class Task:
    id: str
    prompt: str
    n: int
    pixels: tuple[int, int]
    outcome: str  # "completed", "failed" or "cancelled"
    error: str | None
    cost: float
    started: float  # the clock's monotonic time at submission
    created: float  # the clock's wall time at submission
    duration: float  # seconds from submission to the final status
    echo_key: bool = False  # the failure reason echoes the key of whoever asks
    versions: dict[int, int] = field(default_factory=dict)  # image index -> times it changed
    video_seconds: float | None = None  # a video task's: the length of its one video

    @property
    def extension(self) -> str:
        return ".png" if self.video_seconds is None else ".mp4"

    def done(self, now: float) -> bool:
        return now - self.started >= self.duration

    def has_image(self, index: int, now: float) -> bool:
        return self.outcome == "completed" and 0 <= index < self.n and self.done(now)

    def image_validators(self, index: int) -> tuple[str, str]:
        """The image's ETag and Last-Modified: both change when the image does."""
        version = self.versions.get(index, 0)
        modified = formatdate(self.created + self.duration + version, usegmt=True)
        return f'"{self.id}-{index}-v{version}"', modified


def new_task(
    body: dict[str, Any], config: SandboxConfig, rng: random.Random, now: float, wall: float
) -> Task:
    """A task for a valid submission: its outcome, price, pixels and duration decided now."""
    prompt, n = body["prompt"], body.get("n", 1)
    outcome, error, echo_key = "completed", None, False
    failed_by_chance = rng.random() < config.failure_rate
    if config.cancel_word in prompt:
        outcome, error = "cancelled", "The task was cancelled."
    elif config.fail_word in prompt:
        outcome, error = "failed", f"The sandbox failed this task ({config.fail_word})."
    elif config.echo_key_word in prompt:
        outcome, echo_key = "failed", True
    elif failed_by_chance:
        outcome, error = "failed", "The sandbox failed this task at random (failure_rate)."
    cost = round(COST_PER_IMAGE.get(body.get("resolution", "1k"), COST_PER_IMAGE["1k"]) * n, 5)
    pixels, video_seconds = output_pixels(body), None
    if operation_of(body.get("model")) == VIDEO_OPERATION:
        n, video_seconds = 1, float(body.get("duration", DEFAULT_VIDEO_SECONDS))
        pixels = VIDEO_PIXELS[body.get("aspect_ratio", "16:9")]
        cost = round(COST_PER_VIDEO_SECOND * video_seconds, 5)
    duration = config.duration
    if isinstance(duration, tuple):
        duration = rng.uniform(*duration)
    return Task(
        new_task_id(),
        prompt,
        n,
        pixels,
        outcome,
        error,
        cost,
        now,
        wall,
        duration,
        echo_key,
        video_seconds=video_seconds,
    )


def task_view(
    task: Task, now: float, config: SandboxConfig, image_base_url: str, key: str
) -> dict[str, Any]:
    """The `data` of `GET /v1/tasks/{id}` at time `now`; `key` is the bearer key of the asker,
    in the dialect the switches ask for (state synonyms, ISO times)."""
    view = _task_view(task, now, config, image_base_url, key)
    if config.state_synonyms:
        view["status"] = STATE_SYNONYMS.get(view["status"], view["status"])
    if config.iso_times:
        for name in _TIME_FIELDS:
            if name in view:
                view[name] = iso_time(view[name])
        for image in view.get("result", {}).get("images", ()):
            image["expires_at"] = iso_time(image["expires_at"])
    return view


def iso_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 text in UTC, as some replies give times."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _task_view(
    task: Task, now: float, config: SandboxConfig, image_base_url: str, key: str
) -> dict[str, Any]:
    elapsed = now - task.started
    view: dict[str, Any] = {
        "id": task.id,
        "status": "submitted",
        "progress": 0,
        "created": int(task.created),
        "cost": task.cost,
    }
    if config.estimate_factor is not None:
        view["estimated_time"] = max(1, math.ceil(task.duration * config.estimate_factor))
    if elapsed < task.duration * SUBMITTED_SHARE:
        return view
    if elapsed < task.duration:
        view.update(status="processing", progress=min(99, int(100 * elapsed / task.duration)))
        return view
    view["status"] = task.outcome
    if task.outcome != "completed":
        message = task.error or f"Upstream refused the request made with key {key}."
        view["error"] = {"code": task.outcome, "message": message}
        return view
    completed = task.created + task.duration
    expires_at = int(completed + config.image_ttl)
    climb = HOSTILE_URL_PREFIX if config.hostile_word in task.prompt else ""
    images = [
        {
            "url": [f"{image_base_url}/f/image/{climb}{task.id}_{i}{task.extension}"],
            "expires_at": expires_at,
        }
        for i in range(task.n)
    ]
    result: dict[str, Any] = {"images": images}
    if task.video_seconds is not None:
        result = {"videos": [{**video, "duration": task.video_seconds} for video in images]}
    view.update(
        progress=100,
        completed=int(completed),
        actual_time=math.ceil(task.duration),
        credits_cost=round(task.cost * CREDITS_PER_COST, 5),
        result=result,
    )
    return view


@dataclass
class Upload:
    """A file uploaded to `POST /v1/uploads/images`, served back by the image host."""

    token: str
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    created_at: int
    url: str

    def reply(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "filename": self.filename,
            "content_type": self.content_type,
            "bytes": len(self.data),
            "created_at": self.created_at,
        }
