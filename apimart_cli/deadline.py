"""The command's deadline: when everything it does must be over (`--timeout`).

A value made once by the command and handed down to everything that waits: the
poll loop, every retry, every request, read and download takes what is left of
it (docs/architecture.md, "retries and time").
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """When the whole command must end (`--timeout`), on a monotonic clock.

    A value handed to everything that waits: the poll loop, every retry, every
    request and download. `Deadline.none()` never comes.
    """

    def __init__(self, at: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.at = at
        self._clock = clock

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if seconds is None else clock() + seconds, clock)

    @classmethod
    def none(cls) -> Deadline:
        return cls(None)

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or None without a deadline."""
        return None if self.at is None else max(self.at - self._clock(), 0.0)

    def expired(self) -> bool:
        return self.at is not None and self._clock() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left of the time if that is less."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def allows(self, delay: float) -> bool:
        """True if waiting `delay` seconds still ends before the deadline."""
        return self.at is None or self._clock() + delay < self.at
