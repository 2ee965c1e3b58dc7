"""batch.pacing: the AIMD limiter on submissions in flight."""

from __future__ import annotations

import threading

import pytest

from apimart_cli.batch import (
    AimdLimiter,
)
from apimart_cli.constants import RATE_LIMIT_PAUSE
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
