"""Waiting on conditions, never on sleeps that race; a guard is for hangs, not for speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a wait may last before it is taken for a hang: far beyond any normal run, so
# that a loaded machine never trips it; it fails a test only when something never happens.
HANG_GUARD = 30.0


def wait_until(
    condition: Callable[[], object],
    timeout: float = HANG_GUARD,
    *,
    what: str = "the condition",
    must: bool = True,
) -> None:
    """Poll `condition` until it holds; after `timeout`, fail the test (`must`), else go on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            if not must:
                return
            raise AssertionError(f"{what} never held")
        time.sleep(0.02)


def returns(call: Callable[[], T], guard: float = HANG_GUARD) -> T:
    """`call()`'s result (or its exception) once it returns; a test whose call would hang
    fails after `guard` instead of holding the whole run."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed back to the test as it is
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(guard)
    if thread.is_alive():
        raise AssertionError(f"{getattr(call, '__name__', 'the call')} never returned")
    if failure:
        raise failure[0]
    return outcome[0]
