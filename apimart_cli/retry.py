"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

from apimart_cli.constants import (
    RETRY_AFTER_CAP,
    RETRY_BASE_DELAY,
    RETRY_MAX_ATTEMPTS,
    RETRY_MAX_DELAY,
)

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
