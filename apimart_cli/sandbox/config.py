"""How the sandbox behaves: one dataclass of switches, each with a quick, happy default."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

# The real service over-estimates about twice (100 s estimated for a 52 s task).
DEFAULT_ESTIMATE_FACTOR = 2.0


@dataclass
class SandboxConfig:
    """How the sandbox behaves. Every field has a default that makes a quick, happy API."""

    # Seconds from submit to a final status: a number, or (low, high) for a duration drawn
    # per task from a uniform range (seeded by `seed`).
    duration: float | tuple[float, float] = 3.0
    # `estimated_time` is the task's duration times this: 2.0 over-estimates like the real
    # service, 0.5 under-estimates; None leaves the field out of task replies.
    estimate_factor: float | None = DEFAULT_ESTIMATE_FACTOR
    latency: float = 0.0  # seconds added before every API reply (not image downloads)
    download_rate: float | None = None  # bytes/second per image download; None = unlimited
    failure_rate: float = 0.0  # probability that a task ends "failed"
    fail_word: str = "sandbox:fail"  # a prompt containing this ends "failed"
    cancel_word: str = "sandbox:cancel"  # a prompt containing this ends "cancelled"
    hostile_word: str = "sandbox:hostile-url"  # ...gets result URLs named ..%2F..%2F<name>
    # ...ends "failed" with a reason that echoes the key of whoever asks about the task.
    echo_key_word: str = "sandbox:echo-key"
    submit_rate: float | None = None  # submissions per second before 429; None = unlimited
    poll_rate: float | None = None  # status requests (GET /v1/tasks/...) per second before 429
    image_ttl: float = 86400.0  # seconds from completion until image URLs answer 410
    noise: bool = False  # incompressible images of random pixels, for download benchmarks
    refuse_base64: bool = False  # a data: URI in image_urls is a 400, as the newer service
    # The wider dialect: states as relays spell them, in upper case (QUEUED, IN_PROGRESS,
    # SUCCEEDED, FAILURE, CANCELED); times as ISO 8601 text; submissions answered with the
    # finished result (`generation.result`, no task id).
    state_synonyms: bool = False
    iso_times: bool = False
    sync_results: bool = False
    # Idempotency keys as the IETF draft has them: a 409 while the first request with a
    # key is in flight (`latency` long), a 422 when a key that made a task comes back
    # with another body; the same body gets the original task.
    strict_idempotency: bool = False
    video_bytes: int | None = None  # each video's size (its frames padded); None: a few KiB
    seed: int = 0

    def __post_init__(self) -> None:
        self.duration = _duration(self.duration)
        factor = self.estimate_factor
        if factor is not None and not (_is_number(factor) and factor > 0):
            raise ValueError(f"estimate_factor must be a positive number or None, not {factor!r}")

    def updated(self, changes: Any) -> SandboxConfig:
        """A copy with `changes` (a JSON object) applied; ValueError names a bad one."""
        if not isinstance(changes, dict):
            raise ValueError("config changes must be a JSON object")
        known = {f.name: f for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        values = {name: getattr(self, name) for name in known}
        for name, value in changes.items():
            current = values[name]
            if name != "duration" and not _same_kind(current, value, name):
                raise ValueError(f"config field {name} cannot be {value!r}")
            values[name] = tuple(value) if isinstance(value, list) else value
        return SandboxConfig(**values)


_OPTIONAL = {"estimate_factor", "download_rate", "submit_rate", "poll_rate", "video_bytes"}


def _same_kind(current: Any, value: Any, name: str) -> bool:
    if value is None:
        return name in _OPTIONAL
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, str):
        return isinstance(value, str)
    return _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _duration(value: Any) -> float | tuple[float, float]:
    if _is_number(value) and value >= 0:
        return float(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(_is_number(end) and end >= 0 for end in value)
        and value[0] <= value[1]
    ):
        return (float(value[0]), float(value[1]))
    raise ValueError(f"duration must be seconds or a range (low, high), not {value!r}")


def parse_duration(text: str) -> float | tuple[float, float]:
    """`3` or `20-30` (seconds) as `SandboxConfig.duration`; ValueError names a bad one."""
    low, dash, high = text.strip().partition("-")
    try:
        return _duration((float(low), float(high)) if dash else float(low))
    except ValueError:
        raise ValueError(
            f"invalid duration {text!r}: use seconds (3) or a range of seconds (20-30)"
        ) from None
