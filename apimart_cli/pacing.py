"""How many requests may be in flight: additive increase, multiplicative decrease.

One rule for the polls of a wait (`polling.InFlight`) and the submissions of a
batch (`batch.pacing.AimdLimiter`), as TCP paces its segments: the limit grows
by one after a run of successes, up to a ceiling; a 429 halves it (once per
pause, however many replies say so at once) and holds new requests back for its
Retry-After. Pure: the caller says what time it is, and does its own locking.
"""

from __future__ import annotations

from collections.abc import Callable

from apimart_cli.constants import RATE_LIMIT_PAUSE


class Aimd:
    """The limit, the requests counted in flight (`count`), and the pause after a 429.

    `run(limit)` is how many successes in a row add one to the limit. With
    `slow_start`, until the first 429 every success adds one, so a limit that is
    all in use doubles every round trip (TCP's slow start).
    """

    def __init__(
        self,
        ceiling: int,
        *,
        start: int | None = None,
        run: Callable[[int], int] = lambda limit: limit,
        slow_start: bool = False,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling if start is None else min(max(1, start), self.ceiling)
        self.count = 0
        self.paused_until = float("-inf")
        self._run = run
        self._streak = 0
        self._slow_start = slow_start

    def delay(self, now: float) -> float | None:
        """0 if a request may start now, seconds until one may, or None: none is free."""
        pause = self.paused_until - now
        if pause > 0:
            return pause
        return 0.0 if self.count < self.limit else None

    def free(self, now: float) -> bool:
        return self.delay(now) == 0

    def ended(self, *, success: bool) -> None:
        """A request came back; a `success` counts towards raising the limit."""
        self.count -= 1
        if success and self.limit < self.ceiling:
            self._streak += 1
            if self._slow_start or self._streak >= max(1, self._run(self.limit)):
                self.limit, self._streak = self.limit + 1, 0

    def rate_limited(self, now: float, retry_after: float | None) -> float | None:
        """The service answered 429: the pause it asked for if this one halved the
        limit, None if it fell in a pause already under way."""
        halve = now >= self.paused_until
        self._slow_start = False
        if halve:
            self.limit = max(1, self.limit // 2)
        pause = RATE_LIMIT_PAUSE if retry_after is None else retry_after
        self.paused_until = max(self.paused_until, now + pause)
        self._streak = 0
        return pause if halve else None
