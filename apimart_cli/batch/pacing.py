"""How fast a batch submits: as fast as the service allows, and no faster.

The service answers 429 when submissions come too fast. Rather than a fixed
rate, the limit on submissions in flight follows what the service says
(`pacing.Aimd`, the rule the polls follow too): a 429 halves it, a run of
successes adds one back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from apimart_cli.pacing import Aimd


class AimdLimiter:
    """How many submissions may be in flight (`pacing.Aimd`, a run of `limit` accepted
    submissions adding one), with the blocking side: `acquire` waits for a slot.
    Time comes from `clock`, so the rules are tested without waiting.
    """

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._aimd = Aimd(ceiling)
        self.ceiling = self._aimd.ceiling
        self.on_change: Callable[[int, float], None] = lambda limit, pause: None
        self._clock = clock
        self._closed = False
        self._cond = threading.Condition()

    @property
    def limit(self) -> int:
        return self._aimd.limit

    @property
    def in_flight(self) -> int:
        return self._aimd.count

    def delay(self) -> float | None:
        """0 if a submission may start now, seconds until one may, or None: wait for a slot."""
        with self._cond:
            return self._aimd.delay(self._clock())

    def acquire(self) -> bool:
        """Block until a submission may start (True), or until `close` (False)."""
        with self._cond:
            while not self._closed:
                wait = self._aimd.delay(self._clock())
                if wait == 0:
                    self._aimd.count += 1
                    return True
                self._cond.wait(wait)
            return False

    def release(self, *, accepted: bool) -> None:
        """A submission ended; an accepted one counts towards raising the limit."""
        with self._cond:
            self._aimd.ended(success=accepted)
            self._cond.notify_all()

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered 429 (the client's hook; it retries the request itself)."""
        with self._cond:
            pause = self._aimd.rate_limited(self._clock(), retry_after)
            if pause is not None:
                self.on_change(self._aimd.limit, pause)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
