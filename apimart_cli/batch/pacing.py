"""How fast a batch submits: as fast as the service allows, and no faster.

The service answers 429 when submissions come too fast. Rather than a fixed
rate, the limit on submissions in flight follows what the service says (AIMD,
as TCP does): a 429 halves it, a run of successes adds one back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from apimart_cli.constants import RATE_LIMIT_PAUSE


class AimdLimiter:
    """How many submissions may be in flight: additive increase, multiplicative decrease.

    A 429 halves the limit (once per pause, however many replies say so at
    once) and holds new submissions back for its Retry-After; each run of
    `limit` successes adds one back, up to `ceiling`. Time comes from `clock`,
    so the rules are tested without waiting; `acquire` is the blocking side.
    """

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.in_flight = 0
        self.on_change: Callable[[int, float], None] = lambda limit, pause: None
        self._clock = clock
        self._paused_until = float("-inf")
        self._streak = 0
        self._closed = False
        self._cond = threading.Condition()

    def delay(self) -> float | None:
        """0 if a submission may start now, seconds until one may, or None: wait for a slot."""
        with self._cond:
            pause = self._paused_until - self._clock()
            if pause > 0:
                return pause
            return 0.0 if self.in_flight < self.limit else None

    def acquire(self) -> bool:
        """Block until a submission may start (True), or until `close` (False)."""
        with self._cond:
            while not self._closed:
                wait = self.delay()
                if wait == 0:
                    self.in_flight += 1
                    return True
                self._cond.wait(wait)
            return False

    def release(self, *, accepted: bool) -> None:
        """A submission ended; an accepted one counts towards raising the limit."""
        with self._cond:
            self.in_flight -= 1
            if accepted:
                self._streak += 1
                if self._streak >= self.limit and self.limit < self.ceiling:
                    self.limit, self._streak = self.limit + 1, 0
            self._cond.notify_all()

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered 429 (the client's hook; it retries the request itself)."""
        with self._cond:
            now = self._clock()
            halve = now >= self._paused_until  # once per pause, however many 429s
            if halve:
                self.limit = max(1, self.limit // 2)
            pause = RATE_LIMIT_PAUSE if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + pause)
            self._streak = 0
            if halve:
                self.on_change(self.limit, pause)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
