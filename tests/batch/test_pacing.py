"""batch.pacing: the AIMD limiter on submissions in flight, and the pace learned from 429s."""

from __future__ import annotations

import math
import threading
from collections import deque

import pytest

from apimart_cli.batch import (
    AimdLimiter,
)
from apimart_cli.batch.pacing import CATCH_UP, REFUSALS, SPARE, Allowance
from apimart_cli.constants import RATE_LIMIT_PAUSE
from apimart_cli.sandbox.rules import TokenBucket
from tests.helpers.clocks import FakeClock

# -- the AIMD limiter ---------------------------------------------------------------------------


def take(limiter: AimdLimiter, count: int) -> None:
    for _ in range(count):
        assert limiter.delay() == 0
        assert limiter.acquire()


def test_limiter_allows_up_to_its_ceiling_in_flight() -> None:
    limiter = AimdLimiter(4, clock=FakeClock())
    take(limiter, 4)
    assert limiter.delay() is None  # wait for one to end
    limiter.release(accepted=True)
    assert limiter.delay() == 0


def test_a_429_halves_the_limit_and_pauses_for_retry_after() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(8, clock=clock)
    take(limiter, 8)
    limiter.rate_limited(2.0)
    assert limiter.limit == 4
    for _ in range(5):
        limiter.release(accepted=False)
    assert limiter.delay() == pytest.approx(2.0)
    clock.time += 2.0
    assert limiter.delay() == 0
    take(limiter, 1)
    assert limiter.delay() is None  # 4 in flight again


def test_many_429s_in_one_pause_halve_once() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(8, clock=clock)
    for _ in range(4):
        limiter.rate_limited(1.0)
        clock.time += 0.1
    assert limiter.limit == 4
    clock.time += 1.0
    limiter.rate_limited(None)
    assert limiter.limit == 2
    assert limiter.delay() == pytest.approx(RATE_LIMIT_PAUSE)


def test_the_limit_never_falls_below_one() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(2, clock=clock)
    for _ in range(5):
        limiter.rate_limited(0.0)
        clock.time += 0.01
    assert limiter.limit == 1
    assert limiter.delay() == 0


def test_a_run_of_successes_adds_one_back_up_to_the_ceiling() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(4, clock=clock)
    limiter.rate_limited(0.0)
    clock.time += 0.01
    limiter.rate_limited(0.0)
    assert limiter.limit == 1
    limits = []
    for _ in range(12):
        take(limiter, 1)
        limiter.release(accepted=True)
        limits.append(limiter.limit)
    # 1 success at limit 1, 2 at limit 2, 3 at limit 3: then the ceiling holds.
    assert limits == [2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]


def test_a_429_resets_the_run_of_successes() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(4, clock=clock)
    limiter.rate_limited(0.0)  # limit 2
    take(limiter, 1)
    limiter.release(accepted=True)
    clock.time += 0.01
    limiter.rate_limited(0.0)  # limit 1, streak back to 0
    take(limiter, 1)
    limiter.release(accepted=False)  # a failure is no success, nor a slowdown
    assert limiter.limit == 1


def test_the_limiter_says_when_it_slows_down() -> None:
    clock = FakeClock()
    limiter = AimdLimiter(4, clock=clock)
    changes: list[tuple[int, float]] = []
    limiter.on_change = lambda limit, pause: changes.append((limit, pause))
    limiter.rate_limited(3.0)
    limiter.rate_limited(3.0)  # same pause: no second halving, no second message
    assert changes == [(2, 3.0)]


def test_acquire_blocks_until_a_slot_frees_or_the_limiter_closes() -> None:
    limiter = AimdLimiter(1)
    assert limiter.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(limiter.acquire()))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()
    limiter.release(accepted=True)
    waiter.join(2)
    assert results == [True]
    closing = threading.Thread(target=lambda: results.append(limiter.acquire()))
    closing.start()
    limiter.close()
    closing.join(2)
    assert results == [True, False]


# -- the pace learned from the service's refusals -------------------------------------------


def send(limiter: AimdLimiter, clock: FakeClock, bucket: TokenBucket) -> float | None:
    """One submission started now against `bucket`, the service's allowance, answered at
    once: None if accepted, else the Retry-After of its 429 (the slot kept for the resend)."""
    assert limiter.acquire()
    return answer(limiter, clock, bucket)


def answer(limiter: AimdLimiter, clock: FakeClock, bucket: TokenBucket) -> float | None:
    wait = bucket.take(clock())
    if wait:
        retry_after = float(max(1, math.ceil(wait)))  # as the sandbox says it
        limiter.rate_limited(retry_after)
        return retry_after
    limiter.accepted()
    limiter.release(accepted=True)
    return None


def run_batch(count: int, rate: float, *, step: float = 0.005) -> tuple[float, int]:
    """`count` submissions through a limiter against the sandbox's own rate limit, on a
    fake clock, each answered at once and resent after its Retry-After; the client can
    start one each `step` at most. When the last was accepted, and how many 429s."""
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, clock())
    limiter = AimdLimiter(4, clock=clock)
    limiter.expect(count)
    resends: list[float] = []
    accepted = refused = started = 0
    last = 0.0
    while accepted < count:
        due = [when for when in resends if when <= clock()]
        for when in due:
            resends.remove(when)
            if answer(limiter, clock, bucket) is None:
                accepted, last = accepted + 1, clock()
            else:
                refused += 1
                resends.append(clock() + RATE_LIMIT_PAUSE)
        wait = limiter.delay() if started < count else None
        if wait == 0:
            started += 1
            retry_after = send(limiter, clock, bucket)
            if retry_after is None:
                accepted, last = accepted + 1, clock()
            else:
                refused += 1
                resends.append(clock() + retry_after)
            clock.time += step
        else:
            wake = min([*resends, clock() + (step if wait is None else wait)])
            clock.time = max(wake, clock() + 1e-6)
    return last, refused


def test_a_batch_against_the_sandboxs_rate_ends_within_1_percent_of_its_floor() -> None:
    # 1,000 at 20 a second, the first 20 at once (the sandbox's burst): the last can be
    # accepted 49 s in at the earliest. Probing past the rate on every pause (halving the
    # limit in flight alone) took 50.8 s and 46 refusals here; learning it, 49.3 s and 4.
    last, refused = run_batch(1000, 20.0)
    assert 49.0 <= last <= 49.0 * 1.01
    assert refused <= 8


def test_a_slower_service_is_followed_as_closely() -> None:
    # Each refusal costs up to one interval of the rate: 0.2 s at 5 a second (the limit
    # in flight alone: 42.2 s, 39 refusals).
    last, refused = run_batch(200, 5.0, step=0.02)
    assert 39.0 <= last <= 39.0 * 1.05
    assert refused <= 8


def test_a_service_with_no_burst_is_followed_as_closely() -> None:
    # 0.5 a second, one at a time: the first can go at once, the 50th 98 s later.
    last, _ = run_batch(50, 0.5, step=0.05)
    assert 98.0 <= last <= 98.0 * 1.02


def test_the_rate_is_learned_between_refusals_by_when_submissions_were_sent() -> None:
    clock = FakeClock(0.0)
    limiter = AimdLimiter(4, clock=clock)
    assert limiter.acquire()
    limiter.rate_limited(1.0)  # the first refusal: the allowance was spent
    limiter.release(accepted=False)
    assert limiter.allowance.rate is None  # nothing is known from one
    for i in range(21):  # 21 sent over the next 2 s, after the pause
        clock.time = 1.0 + i / 10
        assert limiter.delay() == 0
        assert limiter.acquire()
        limiter.accepted()
        limiter.release(accepted=True)
    clock.time = 3.05
    assert limiter.acquire()
    limiter.rate_limited(1.0)  # the second: 21 accepted in 3.05 s, so at least 20 / 3.05
    assert limiter.allowance.rate == pytest.approx(20 / 3.05)


def test_an_acceptance_reported_after_a_refusal_counts_when_it_was_sent() -> None:
    clock = FakeClock(0.0)
    limiter = AimdLimiter(4, clock=clock)
    acquired, answered = threading.Event(), threading.Event()

    def worker() -> None:
        assert limiter.acquire()  # sent at 0
        acquired.set()
        assert answered.wait(10)
        limiter.accepted()  # its acceptance read (and said) after another's refusal

    thread = threading.Thread(target=worker)
    thread.start()
    assert acquired.wait(10)
    clock.time = 0.1
    assert limiter.acquire()
    limiter.rate_limited(1.0)  # sent at 0.1 and refused: the allowance was spent by then
    clock.time = 0.5
    answered.set()
    thread.join(10)
    assert limiter.allowance.accepted_between(-math.inf, 0.1) == 1


def test_a_refused_submission_counts_from_its_resend() -> None:
    clock = FakeClock(0.0)
    limiter = AimdLimiter(4, clock=clock)
    assert limiter.acquire()
    limiter.rate_limited(1.0)
    clock.time = 1.0
    limiter.accepted()  # its resend, accepted after the pause
    assert limiter.allowance.accepted_between(float("-inf"), 0.0) == 0
    assert limiter.allowance.accepted_between(0.0, 2.0) == 1


def test_a_polls_429_neither_teaches_the_pace_nor_is_counted_as_a_submissions() -> None:
    clock = FakeClock(0.0)
    limiter = AimdLimiter(4, clock=clock)
    poller = threading.Thread(target=lambda: limiter.rate_limited(1.0))  # never acquired
    poller.start()
    poller.join()
    assert limiter.limit == 2  # the limit in flight still follows every 429
    assert limiter.allowance._refusals == deque()


def test_a_stretch_the_client_fell_behind_in_does_not_lower_the_rate() -> None:
    allowance = Allowance()
    now = 0.0

    def stretch(count: int, seconds: float) -> None:
        nonlocal now
        for i in range(count):
            allowance.started(now + i * seconds / count)
            allowance.accepted(now + i * seconds / count)
        now += seconds
        allowance.refused(now, resent_at=now + 1.0)

    allowance.refused(now, resent_at=now + 1.0)
    stretch(201, 10.0)  # 20 a second
    assert allowance.rate == pytest.approx(20.0)
    stretch(101, 10.0)  # a busy machine sent only half as many
    assert allowance.rate == pytest.approx(20.0)


def burst_then_refused(allowance: Allowance, count: int = 20) -> None:
    """`count` accepted at once, then the first refusal, at 0."""
    allowance.started(-0.01)
    for _ in range(count):
        allowance.accepted(-0.01)
    allowance.refused(0.0, resent_at=1.0)


def test_the_pace_spaces_submissions_a_little_faster_than_the_rate() -> None:
    allowance = Allowance(margin=0.01, probe=math.inf)
    burst_then_refused(allowance)
    for i in range(400):
        allowance.accepted(1.0 + i / 20)
    allowance.refused(21.0, resent_at=22.0)  # 400 in 21 s: at least 399 / 21 a second
    assert allowance.rate == pytest.approx(399 / 21)
    pace = 399 / 21 * (1 + 0.01 + 4 / 400)
    assert allowance.pace(22.0) == pytest.approx(pace)
    now = 22.0
    while allowance.delay(now) == 0:  # the pause's end: a few slots at once
        allowance.started(now)
    now += allowance.delay(now)
    for _ in range(100):  # then on time, one an interval
        assert allowance.delay(now) == pytest.approx(0, abs=1e-9)
        allowance.started(now)
        assert allowance.delay(now) == pytest.approx(1 / pace)
        now += 1 / pace


def test_the_pace_catches_up_a_late_start_only_so_far() -> None:
    allowance = Allowance(margin=0.0, probe=math.inf)
    burst_then_refused(allowance)
    for i in range(101):
        allowance.accepted(i / 10)
    allowance.refused(10.0, resent_at=11.0)
    interval = 1 / allowance.pace(20.0)  # type: ignore[operator]
    allowance.started(20.0)
    allowance.started(25.0)  # late by seconds: a few slots may go at once, no more
    behind = 0
    while allowance.delay(25.0) == 0:
        allowance.started(25.0)
        behind += 1
    assert behind == int(CATCH_UP / interval)


def test_the_last_submissions_go_at_once_when_the_allowance_left_covers_them() -> None:
    allowance = Allowance(margin=0.0, probe=math.inf)
    allowance.started(-0.01)
    for _ in range(20):
        allowance.accepted(-0.01)  # a burst of 20
    allowance.refused(0.0, resent_at=1.0)
    for i in range(220):
        allowance.accepted(i / 20)
    allowance.refused(11.0, resent_at=12.0)  # at least 219 / 11 a second
    assert allowance.burst == pytest.approx(20.0, abs=0.5)
    # A second after the refusal the allowance is full again, less the refused one's resend:
    assert allowance.left(12.0) == pytest.approx(allowance.burst - 1, abs=1)
    assert allowance.delay(11.2, remaining=10) > 0  # too soon: not refilled yet
    while allowance.delay(12.0) == 0:  # the pause's end: a few slots at once
        allowance.started(12.0)
    assert allowance.delay(12.0) > 0  # the pace says wait...
    covered = math.floor(allowance.left(12.0) - SPARE)
    assert allowance.delay(12.0, remaining=covered) == 0  # ...but these are the last
    assert allowance.delay(12.0, remaining=covered + 1) > 0


def test_an_acceptance_answered_after_the_refusal_it_preceded_corrects_the_rate() -> None:
    allowance = Allowance()
    allowance.refused(0.0, resent_at=1.0)
    for i in range(20):
        allowance.accepted(1.0 + i / 20)
    allowance.refused(2.0, resent_at=3.0)
    assert allowance.rate == pytest.approx(19 / 2)
    allowance.accepted(1.99)  # sent before the refusal, its answer read after
    assert allowance.rate == pytest.approx(20 / 2)


def test_what_is_kept_to_learn_from_stays_bounded_however_long_the_batch() -> None:
    allowance = Allowance()
    for second in range(1000):
        for i in range(20):
            allowance.accepted(second + i / 20)
        allowance.refused(second + 1.0, resent_at=second + 2.0)
    assert len(allowance._refusals) == len(allowance._accepted) == REFUSALS
    assert allowance.rate == pytest.approx((20 * (REFUSALS - 1) - 1) / (REFUSALS - 1))


def test_the_pace_grows_ever_faster_while_nothing_is_refused() -> None:
    allowance = Allowance(margin=0.01, probe=8.0)
    burst_then_refused(allowance)
    for i in range(400):
        allowance.accepted(1.0 + i / 20)
    allowance.refused(21.0, resent_at=22.0)
    rate, excess = allowance.rate, 0.01 + 4 / 400
    assert rate is not None
    assert allowance.pace(21.0) == pytest.approx(rate * (1 + excess))
    assert allowance.pace(29.0) == pytest.approx(rate * (1 + 2 * excess))  # the service's
    assert allowance.pace(45.0) == pytest.approx(rate * (1 + 8 * excess))  # may have risen
    allowance.started(21.0 + 86400 * 365)  # a year on: no limit at all, and no overflow
    assert allowance.delay(21.0 + 86400 * 365) == 0


def test_an_allowance_with_no_burst_is_not_paced() -> None:
    # Nothing banks in a pause, so there is nothing a pace could save; refusals find the rate.
    allowance = Allowance()
    burst_then_refused(allowance, count=1)
    for i in range(40):
        allowance.accepted(1.0 + i / 2)
    allowance.refused(21.0, resent_at=22.0)
    assert allowance.rate is not None and allowance.burst < 2
    assert allowance.pace(22.0) is None
    allowance.started(22.0)
    assert allowance.delay(22.0) == 0
