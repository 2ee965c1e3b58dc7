"""Fake time: it moves only when a test moves it (or a wait with nothing to do does)."""

from __future__ import annotations

import queue
from typing import TypeVar

Event = TypeVar("Event")


class FakeClock:
    """A clock to hand in where the code takes one: call it, or call `now()`, for the
    time; set or add to `time` to move it; hand in `sleep` and read back `slept`."""

    def __init__(self, start: float = 100.0) -> None:
        self.time = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.time

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        """A sleep that passes at once on the machine and in full on this clock."""
        self.slept.append(seconds)
        self.time += seconds

    def wait(self, events: queue.Queue[Event], timeout: float | None) -> Event | None:
        """A loop's wait for its next event: one that comes at once is returned; when none
        comes, the whole `timeout` passes on this clock (and none on the machine's)."""
        if timeout is None:  # only a poll or an id can wake the loop: they come quickly
            return events.get(timeout=10)
        try:
            return events.get(timeout=0.05)
        except queue.Empty:
            self.time += timeout
            return None
