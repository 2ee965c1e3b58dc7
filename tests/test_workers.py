"""workers: calls a caller waits for only until a deadline, on threads kept for reuse."""

from __future__ import annotations

import queue
import threading

import pytest

from apimart_cli import workers
from apimart_cli.deadline import Deadline
from apimart_cli.errors import WaitTimeout
from apimart_cli.workers import Runner, map_within


def runner_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "test-runner"]


def test_calls_one_after_another_share_one_thread() -> None:
    runner = Runner("test-runner")
    seen = {runner.run(Deadline.after(10), threading.get_ident) for _ in range(50)}
    assert len(seen) == 1 and len(runner_threads()) == 1
    runner.close()


def test_a_call_that_raises_raises_in_the_caller() -> None:
    runner = Runner("test-runner")
    with pytest.raises(ValueError, match="bad reply"):
        runner.run(Deadline.after(10), lambda: int("bad reply"))
    assert runner.run(Deadline.after(10), lambda: 7) == 7  # the thread serves on
    runner.close()


def test_a_call_past_its_deadline_leaves_its_caller_at_once_and_keeps_its_thread() -> None:
    runner = Runner("test-runner")
    release, ended = threading.Event(), threading.Event()

    def hangs() -> str:
        release.wait(30)
        ended.set()
        return "late"

    with pytest.raises(WaitTimeout):
        runner.run(Deadline.after(0.05), hangs)
    assert not ended.is_set()  # the caller did not wait for it
    # The next call does not queue behind the hung one.
    assert runner.run(Deadline.after(10), lambda: "next") == "next"
    assert len(runner_threads()) == 2
    release.set()
    assert ended.wait(10)
    runner.close()


def test_close_ends_the_idle_threads_and_a_busy_one_when_its_call_ends() -> None:
    runner = Runner("test-runner")
    release = threading.Event()
    busy = threading.Thread(target=lambda: runner.run(Deadline.after(30), release.wait))
    busy.start()
    assert runner.run(Deadline.after(10), lambda: 1) == 1  # a second thread, now idle
    runner.close()
    release.set()
    busy.join(10)
    for thread in runner_threads():
        thread.join(10)
    assert runner_threads() == []


def test_a_thread_idle_too_long_ends_and_the_next_call_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("apimart_cli.workers.REQUEST_THREAD_IDLE_SECONDS", 0.05)
    runner = Runner("test-runner")
    assert runner.run(Deadline.after(10), lambda: 1) == 1
    for thread in runner_threads():
        thread.join(10)  # ends by itself: nobody called close
    assert runner_threads() == []
    assert runner.run(Deadline.after(10), lambda: 2) == 2
    runner.close()


def test_map_within_answers_each_item_in_order_with_its_failure() -> None:

    def half(n: int) -> float:
        if n == 3:
            raise ValueError("three")
        return n / 2

    done, timed_out = map_within(Deadline.after(30), half, [2, 3, 4], workers=2, name="t")

    assert not timed_out
    assert done[0] == (True, 1.0) and done[2] == (True, 2.0)
    ok, error = done[1]
    assert not ok and isinstance(error, ValueError)


def test_map_within_starts_nothing_after_a_failure_when_asked() -> None:

    started: list[int] = []

    def fail(n: int) -> None:
        started.append(n)
        raise ValueError(n)

    done, timed_out = map_within(
        Deadline.after(30), fail, [1, 2, 3], workers=1, name="t", stop_after_failure=True
    )

    assert started == [1] and list(done) == [0] and not timed_out


def test_map_within_returns_at_the_deadline_without_the_late_items() -> None:

    release = threading.Event()
    try:
        done, timed_out = map_within(
            Deadline.after(0), lambda n: release.wait(), [1], workers=1, name="t"
        )
    finally:
        release.set()

    assert timed_out and done == {}


class _Slow:
    """A queue that stays empty for its first `empty` waits, saying how long each was."""

    def __init__(self, empty: int) -> None:
        self.empty, self.waits = empty, list[float | None]()

    def get(self, timeout: float | None = None) -> str:
        self.waits.append(timeout)
        if len(self.waits) <= self.empty:
            raise queue.Empty
        return "the item"


def test_a_long_wait_is_made_of_short_ones_so_a_signal_is_never_held_up() -> None:
    # A signal that lands just as a thread starts to block is seen only when the block
    # ends: the main thread never blocks longer than SIGNAL_CHECK_SECONDS at once.
    slow = _Slow(empty=5)
    assert workers.take(slow, None) == "the item"  # type: ignore[arg-type]
    assert slow.waits == [workers.SIGNAL_CHECK_SECONDS] * 6
    with pytest.raises(queue.Empty):
        workers.take(queue.SimpleQueue(), 0)
