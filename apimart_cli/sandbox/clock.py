"""The sandbox's time: tasks, rate limits and image lifetimes advance by a clock.

`SystemClock` is real time that a test may still move forward (`advance`), so a
60-second task can be completed at once, or an image expired, without waiting.
`ManualClock` stands still until advanced, and its `sleep` advances it instead of
waiting: with it, latency, slow replies and throttled downloads cost no real time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

# A ManualClock's wall time starts here unless told otherwise (2026-01-01T00:00:00Z).
MANUAL_CLOCK_EPOCH = 1_767_225_600.0


class Clock(Protocol):
    """What the sandbox asks of time."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def advance(self, seconds: float) -> None: ...


class SystemClock:
    """Real time, plus however far `advance` has moved it."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def time(self) -> float:
        return time.time() + self._offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class ManualClock:
    """Time that moves only when told to: by `advance`, or by a `sleep`."""

    def __init__(self, start: float = MANUAL_CLOCK_EPOCH) -> None:
        self._now = 0.0
        self._start = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._start + self._now

    def sleep(self, seconds: float) -> None:
        """Advance instead of waiting (and let other threads run)."""
        self.advance(seconds)
        time.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += seconds
