"""How fast a batch submits: as fast as the service allows, and no faster.

The service answers 429 when submissions come too fast. Two rules follow what
it says. The limit on submissions in flight is `pacing.Aimd`, the rule the polls
follow too: a 429 halves it and holds new submissions back for its Retry-After,
a run of successes adds one back. And the pace: a service that limits a rate
refuses once its allowance is spent, so the submissions it accepted between two
of its refusals are the rate it allows (`Allowance`). Once that is known, new
submissions are spaced to it, a little faster, so that its allowance is used but
only seldom overrun: each overrun costs a pause of the Retry-After, in which the
allowance may fill up and then go unused. The allowance left over at the end is
not wasted either: the last submissions go at once when it covers them.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable

from apimart_cli.pacing import Aimd

# Submissions are spaced to the rate learned, this much faster (and by DOUBT submissions
# more over the time it was learned in, which it may be short of: one at each end, and
# what went unused at the end of a pause); the excess doubles every PROBE seconds since
# the last refusal, as the service's rate may have risen. Too slow a pace loses the
# allowance all along; too fast, one pause now and then, found by the next refusal.
MARGIN = 0.01
DOUBT = 4
PROBE = 8.0
MOST_DOUBLINGS = 32  # by then the pace is no limit at all (and 2 ** n stays a float)
# A service whose allowance banks less than this is not paced: there is little to lose
# in a pause, and refusals find its rate as well as a pace could.
BURST = 2.0
# A rate is learned only from at least this many submissions accepted between two
# refusals: fewer say too little (the pace is then the limit in flight's alone).
LEAST = 10
# How far the pace may catch up after a submission started late (a busy machine), or
# after a pause: at most this many seconds' worth at once.
CATCH_UP = 0.25
# The rate is learned from the refusals of about the last this many seconds (at most
# this many of them).
WINDOW = 60.0
REFUSALS = 16
# The last submissions go at once when the allowance left, as learned, covers them
# with this many to spare.
SPARE = 1.0


class Allowance:
    """What the service allows, learned from its refusals, and the pace of new
    submissions that follows. Pure: the caller says what time it is, and does its
    own locking.

    A service that limits a rate keeps an allowance that fills at that rate up to a
    burst, and refuses when it is spent. Each refusal (the first of a pause) marks an
    allowance spent, so the submissions accepted from one refusal to a later one, over
    the time between, are the rate (`rate`); those accepted before the first, less the
    rate's share of that time, are the burst (`burst`). Before the second refusal
    nothing is known, and submissions go as fast as the limit in flight allows. From
    then on new ones are spaced to the rate (a little faster: `pace`), and the
    allowance left is followed from the last refusal on, so that the last submissions
    go at once when it covers them.
    """

    def __init__(self, *, margin: float = MARGIN, probe: float = PROBE) -> None:
        self.rate: float | None = None
        self.burst = 0.0
        self._doubt = 0.0  # how far short of the rate the learned one may be, as a fraction
        self._margin, self._probe = margin, probe
        self._refusals: deque[float] = deque()  # when, the first refusal of each pause
        # Accepted submissions, by when they were sent: before the first refusal, and
        # from each refusal of `_refusals` until the next.
        self._before_first = 0
        self._accepted: deque[int] = deque()
        self._first_start: float | None = None
        self._first_refusal: float | None = None
        self._next = float("-inf")  # when the next submission may start by the pace
        self._left, self._left_at = 0.0, float("-inf")  # the allowance left, as of when
        self._pause_end = float("-inf")  # the end of the pause after the last refusal

    def pace(self, now: float) -> float | None:
        """Submissions a second from now on, or None: as fast as they can go (nothing
        learned yet, or an allowance with no burst to lose in a pause)."""
        if self.rate is None or self.burst < BURST:
            return None
        doublings = min((now - self._refusals[-1]) / self._probe, MOST_DOUBLINGS)
        return self.rate * (1 + (self._margin + self._doubt) * 2**doublings)

    def left(self, now: float) -> float:
        """The allowance left now, as learned (0 while the rate is not known)."""
        if self.rate is None:
            return 0.0
        return min(self.burst, self._left + self.rate * max(0.0, now - self._left_at))

    def delay(self, now: float, remaining: int | None = None) -> float:
        """Seconds until the next submission may start (0: now), `remaining` of them
        still to start, this one included (None: not known)."""
        if remaining is not None and remaining <= self.left(now) - SPARE:
            return 0.0  # the last ones: the allowance left covers them all
        return max(0.0, self._next - now)

    def started(self, now: float) -> None:
        """A submission started: the next one's slot is one interval later (catching up at
        most CATCH_UP behind), and it takes its share of the allowance."""
        if self._first_start is None:
            self._first_start = now
        pace = self.pace(now)
        if pace is not None:
            self._next = max(self._next, now - CATCH_UP) + 1 / pace
            self._take(now)

    def accepted(self, sent: float) -> None:
        """A submission sent at `sent` was accepted: it took its share of the allowance
        then, and counts towards the rate learned between the refusals around it (one
        sent before the last refusal and answered after it, too: the rate is learned
        again)."""
        after = bisect.bisect_right(self._refusals, sent)
        if after == 0:
            if self._first_refusal is None or sent < self._first_refusal:
                self._before_first += 1
            return  # else sent before the refusals kept: forgotten
        self._accepted[after - 1] += 1
        if after < len(self._refusals):
            self._estimate()

    def refused(self, now: float, resent_at: float) -> None:
        """A 429: the request is sent again at `resent_at` (the pause's end), taking its
        slot of the pace and its share of the allowance. The first of a pause says the
        allowance was spent."""
        if now >= self._pause_end:
            self._learn(now)
            self._left, self._left_at = 0.0, now
        self._pause_end = max(self._pause_end, resent_at)
        pace = self.pace(now)
        if pace is not None:
            self._next = max(self._next, resent_at - CATCH_UP) + 1 / pace
            self._take(now)

    def _learn(self, now: float) -> None:
        """The first refusal of a pause: the service's allowance was spent just now.

        Between two such refusals the service accepted N submissions in T seconds, its
        allowance spent (less than one left) at both ends: its rate is at least
        (N - 1) / T, more if some of it went unused (a pause, a busy machine), and at
        most (N + 1) / T if none did. The rate learned is the best such bound of the
        refusals of the last WINDOW seconds; the pace adds back the doubt
        (DOUBT / N).
        """
        if self._first_refusal is None:
            self._first_refusal = now
        self._refusals.append(now)
        self._accepted.append(0)
        while len(self._refusals) > 2 and (
            now - self._refusals[0] > WINDOW or len(self._refusals) > REFUSALS
        ):
            self._refusals.popleft()
            self._accepted.popleft()
        self._estimate()

    def _estimate(self) -> None:
        """The rate (and burst) from the refusals and acceptances known so far."""
        if self._first_refusal is None:
            return
        times, counts = list(self._refusals), list(self._accepted)
        spans = [
            (sum(counts[i:j]), times[j] - times[i])
            for i in range(len(times))
            for j in range(i + 1, len(times))
            if times[j] > times[i]
        ]
        spans = [(count, seconds) for count, seconds in spans if count >= LEAST]
        if not spans:
            return
        count, seconds = max(spans, key=lambda span: (span[0] - 1) / span[1])
        self.rate, self._doubt = (count - 1) / seconds, DOUBT / count
        if self._first_start is not None:
            # The burst: what was accepted of those sent before the first refusal, beyond
            # the rate's share of that time.
            spent = self._first_refusal - self._first_start
            self.burst = max(0.0, self._before_first - self.rate * spent)

    def accepted_between(self, earlier: float, later: float) -> int:
        """How many accepted submissions were sent from the refusal at `earlier` (or from
        the start: -inf) until the one at `later`, as far as the refusals kept go."""
        count = self._before_first if earlier == float("-inf") else 0
        for when, accepted in zip(self._refusals, self._accepted, strict=True):
            if earlier <= when < later:
                count += accepted
        return count

    def _take(self, now: float) -> None:
        self._left, self._left_at = self.left(now) - 1, now


class AimdLimiter:
    """How many submissions may be in flight (`pacing.Aimd`, a run of `limit` accepted
    submissions adding one) and how fast they may start (`Allowance`), with the
    blocking side: `acquire` waits for a slot. Time comes from `clock`, so the rules
    are tested without waiting.
    """

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._aimd = Aimd(ceiling)
        self._allowance = Allowance()
        self._to_start: int | None = None  # submissions still to start, when told
        self._sending = threading.local()  # when this worker thread's submission was sent
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

    @property
    def allowance(self) -> Allowance:
        return self._allowance

    def expect(self, count: int) -> None:
        """`count` submissions are to start: once the allowance left covers those still to
        start, they go at once."""
        with self._cond:
            self._to_start = count

    def delay(self) -> float | None:
        """0 if a submission may start now, seconds until one may, or None: wait for a slot."""
        with self._cond:
            return self._delay(self._clock())

    def _delay(self, now: float) -> float | None:
        wait = self._aimd.delay(now)
        if wait != 0:
            return wait
        remaining = None if self._to_start is None else max(1, self._to_start)
        return self._allowance.delay(now, remaining)

    def acquire(self) -> bool:
        """Block until a submission may start (True), or until `close` (False). The thread
        that acquired sends it: `accepted` and `rate_limited` from it are about it."""
        with self._cond:
            while not self._closed:
                now = self._clock()
                wait = self._delay(now)
                if wait == 0:
                    self._aimd.count += 1
                    self._allowance.started(now)
                    self._sending.sent = now
                    if self._to_start is not None:
                        self._to_start -= 1
                    return True
                self._cond.wait(wait)
            return False

    def accepted(self) -> None:
        """The service accepted the submission this thread sent (said as soon as its reply
        is read, before it is recorded)."""
        sent = getattr(self._sending, "sent", None)
        if sent is None:
            return  # not a thread that acquired a slot: nothing to learn from
        with self._cond:
            self._allowance.accepted(sent)

    def release(self, *, accepted: bool) -> None:
        """A submission ended; an accepted one counts towards raising the limit."""
        with self._cond:
            self._aimd.ended(success=accepted)
            self._cond.notify_all()

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered 429 (the client's hook; it retries the request itself)."""
        with self._cond:
            now = self._clock()
            pause = self._aimd.rate_limited(now, retry_after)
            if getattr(self._sending, "sent", None) is not None:  # a submission's 429
                # It is sent again after the pause: if accepted then, it counts from now on.
                self._sending.sent = now
                self._allowance.refused(now, resent_at=self._aimd.paused_until)
            if pause is not None:
                self.on_change(self._aimd.limit, pause)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
