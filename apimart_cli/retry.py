"""When to try again, how long to wait first, and when time is up.

`retrying` is the one retry loop: API calls (`client`) and image downloads
(`downloads`) both go through it, and both stop at the command's `Deadline`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

from apimart_cli.constants import (
    RETRY_AFTER_CAP,
    RETRY_BASE_DELAY,
    RETRY_MAX_ATTEMPTS,
    RETRY_MAX_DELAY,
)
from apimart_cli.deadline import Deadline
from apimart_cli.errors import ApimartError, WaitTimeout

# Statuses after which the server cannot have accepted a submission (a paid POST).
SAFE_TO_RESEND_SUBMIT = frozenset({429, 503})
# Statuses worth another try for requests that change nothing (GETs).
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before try `attempt + 1`: 0.5 s doubling up to 8 s, jittered down by up to half."""
    doublings = min(attempt - 1, 32)  # enough to pass the cap; more would overflow a float
    ceiling = min(RETRY_BASE_DELAY * 2.0**doublings, RETRY_MAX_DELAY)
    jitter = (rng or random).uniform(0.5, 1.0)
    return ceiling * jitter


def delay_before_retry(attempt: int, retry_after: float | None) -> float:
    """The server's `Retry-After` where it gave one, else exponential backoff."""
    if retry_after is not None:
        return retry_after
    return backoff_delay(attempt)


def attempts_left(attempt: int) -> bool:
    """True while another try is allowed after try number `attempt` (1-based)."""
    return attempt < RETRY_MAX_ATTEMPTS


T = TypeVar("T")


class Transient(Exception):
    """One try failed in a way another try may not: `error` is what the user sees if none
    succeeds (already with its exit code), `retry_after` the server's wish, if any."""

    def __init__(self, error: ApimartError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def retrying(
    attempt: Callable[[], T],
    *,
    deadline: Deadline,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """`attempt()` until it succeeds, raises something not `Transient`, runs out of
    tries (its last error), or the next wait would end past the deadline (WaitTimeout)."""
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except Transient as failure:
            error = failure.error
            if not attempts_left(tries):
                raise error from None
            delay = delay_before_retry(tries, failure.retry_after)
            if not deadline.allows(delay):
                # Time, not the service, ran out: the command's timeout (exit 124) applies.
                raise WaitTimeout(f"Out of time while retrying: {error.message}") from None
            if on_retry is not None:
                on_retry(f"{_sentence(error.message)} Retrying in {delay:.1f} s (try {tries + 1}).")
            sleep(delay)


def _sentence(message: str) -> str:
    """`message` ending as a sentence, so that the next one does not run into it."""
    message = message.rstrip()
    return message if message.endswith((".", "!", "?", ":")) else message + "."
