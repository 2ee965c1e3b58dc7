"""Retry rules: Retry-After, exponential backoff with jitter, the number of tries."""

from __future__ import annotations

import math
import random
from email.utils import format_datetime, parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.constants import RETRY_MAX_ATTEMPTS
from apimart_cli.retry import (
    attempts_left,
    backoff_delay,
    delay_before_retry,
    parse_retry_after,
)

HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_TS = parsedate_to_datetime(HTTP_DATE).timestamp()


class FixedJitter(random.Random):
    """A random source whose `uniform` always returns its low or high bound."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("   ", None, None),
        ("3", None, 3.0),
        (" 7 ", None, 7.0),
        ("0", None, 0.0),
        ("2.5", None, 2.5),
        ("0.25", None, 0.25),
        ("-4", None, 0.0),
        ("-0.5", None, 0.0),
        ("30", None, 30.0),
        ("31", None, 30.0),
        ("120", None, 30.0),
        ("1e9", None, 30.0),
        ("inf", None, 30.0),
        ("-inf", None, 0.0),
        ("nan", None, None),
        ("NaN", None, None),
        ("soon", None, None),
        ("3 seconds", None, None),
        ("0x10", None, None),
        # An HTTP date: the time left until then, from a fixed `now`.
        (HTTP_DATE, DATE_TS - 10, 10.0),
        (HTTP_DATE, DATE_TS - 0.5, 0.5),
        (HTTP_DATE, DATE_TS, 0.0),
        (HTTP_DATE, DATE_TS + 3600, 0.0),  # in the past: retry now
        (HTTP_DATE, DATE_TS - 3600, 30.0),  # far in the future: capped
        ("Wed, 21 Oct 2015 07:28:00 +0100", DATE_TS - 3600 - 5, 5.0),
        ("Wed, 21 Oct 2015 07:28:00", DATE_TS - 10, None),  # no zone: not an HTTP date
        ("Wed, 32 Oct 2015 07:28:00 GMT", DATE_TS, None),
        ("Mon, 99 Foo 2015 GMT", DATE_TS, None),
    ],
)
def test_parse_retry_after(value: str | None, now: float | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=now) == expected


def test_parse_retry_after_date_uses_the_real_clock_without_now() -> None:
    future = format_datetime(parsedate_to_datetime(HTTP_DATE).replace(year=2999), usegmt=True)
    assert parse_retry_after(future) == 30.0
    assert parse_retry_after(HTTP_DATE) == 0.0


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (7, 8.0), (50, 8.0)],
)
def test_backoff_delay_bounds(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, FixedJitter(high=True)) == ceiling
    assert backoff_delay(attempt, FixedJitter(high=False)) == ceiling / 2
    rng = random.Random(1234)
    for _ in range(200):
        assert ceiling / 2 <= backoff_delay(attempt, rng) <= ceiling


def test_backoff_delay_is_jittered() -> None:
    rng = random.Random(7)
    delays = {backoff_delay(3, rng) for _ in range(20)}
    assert len(delays) > 1


def test_backoff_delay_is_reproducible_with_a_seed() -> None:
    first = [backoff_delay(a, random.Random(42)) for a in range(1, 7)]
    second = [backoff_delay(a, random.Random(42)) for a in range(1, 7)]
    assert first == second


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, True), (2, True), (5, True), (6, False), (7, False), (100, False)],
)
def test_attempts_left(attempt: int, expected: bool) -> None:
    assert attempts_left(attempt) is expected


def test_a_request_is_tried_six_times() -> None:
    tries = 0
    while True:
        tries += 1
        if not attempts_left(tries):
            break
    assert tries == RETRY_MAX_ATTEMPTS == 6


def test_delay_before_retry_prefers_retry_after() -> None:
    assert delay_before_retry(1, 12.0) == 12.0
    assert delay_before_retry(4, 0.0) == 0.0
    assert 0.25 <= delay_before_retry(1, None) <= 0.5
    assert 4.0 <= delay_before_retry(5, None) <= 8.0


def _ceiling(attempt: int) -> float:
    return min(0.5 * 2 ** min(attempt - 1, 10), 8.0)


@given(attempt=st.integers(min_value=1, max_value=10**6), seed=st.integers())
def test_backoff_is_always_within_its_bounds(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, random.Random(seed))
    ceiling = _ceiling(attempt)
    assert ceiling / 2 <= delay <= ceiling <= 8.0


@given(value=st.one_of(st.none(), st.text(), st.floats().map(str), st.integers().map(str)))
def test_parse_retry_after_is_none_or_within_the_cap(value: str | None) -> None:
    seconds = parse_retry_after(value, now=DATE_TS)
    assert seconds is None or (0.0 <= seconds <= 30.0 and not math.isnan(seconds))


@given(when=st.datetimes(timezones=st.just(parsedate_to_datetime(HTTP_DATE).tzinfo)))
def test_parse_retry_after_dates_are_within_the_cap(when: object) -> None:
    text = format_datetime(when, usegmt=True)  # type: ignore[arg-type]
    seconds = parse_retry_after(text, now=DATE_TS)
    assert seconds is None or 0.0 <= seconds <= 30.0
